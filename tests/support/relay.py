"""relay itself as a subprocess (`python -m relay serve`), configured from TOML text or a dict."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .ports import free_port
from .process import ManagedProcess
from .timeouts import STARTUP_TIMEOUT

# pusher-js 8.6.0 adds these query parameters to its WebSocket URL.
_PUSHER_JS_QUERY = "protocol=7&client=js&version=8.6.0&flash=false"

# One app that every SDK accepts (the Python SDK requires a numeric id).
DEFAULT_APP: Mapping[str, object] = {
    "id": "1001",
    "key": "app-key",
    "secret": "app-secret",
    "enable_client_events": True,
}


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


class RelayProcess(ManagedProcess):
    """A relay server on 127.0.0.1:`port`, started with `--config <file> --port <port>` (no --config when
    `config_path` is None). Tests of signal handling use send_signal() and wait_exit()."""

    def __init__(
        self,
        port: int,
        config_path: Path | None,
        extra_args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
    ) -> None:
        self.port = port
        self.config_path = config_path
        # sys.executable is the suite's interpreter, i.e. .venv/bin/python under scripts/test,
        # where relay is installed in editable mode.
        argv = [
            sys.executable, "-m", "relay", "serve",
            *(["--config", str(config_path)] if config_path is not None else []),
            "--host", "127.0.0.1",
            "--port", str(port),
            *extra_args,
        ]  # fmt: skip
        super().__init__(f"relay:{port}", argv, log_path, env=env)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, key: str = str(DEFAULT_APP["key"])) -> str:
        """The URL pusher-js would open for app `key`."""
        return f"ws://127.0.0.1:{self.port}/app/{key}?{_PUSHER_JS_QUERY}"

    def is_up(self) -> bool:
        return http_status(f"{self.http_url}/up") == 200

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_until(self.is_up, "GET /up answering 200", timeout)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start again on the same port and config after stop() or kill()."""
        self.stop()
        self.spawn()
        self.wait_ready(timeout)


def start_relay(
    config: str | Mapping[str, object] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    workdir: Path | None = None,
    port: int | None = None,
    config_file: bool = True,
) -> RelayProcess:
    """Start relay and return once `GET /up` answers 200.

    `config` is TOML text or a dict written as TOML (None: one app, DEFAULT_APP); with `config_file` False
    relay gets no --config at all (`config` must be None) and serves its development app. `env` is
    added to this process's environment, minus inherited RELAY_* and REVERB_* settings (relay
    reads both) so a developer's shell cannot change what a test runs. The caller must stop()
    it (fixtures do).
    """
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="relay-test-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    config_path: Path | None = None
    if config_file:
        if config is None:
            config = {"apps": [dict(DEFAULT_APP)]}
        config_path = workdir / f"relay-{port}.toml"
        config_path.write_text(config if isinstance(config, str) else to_toml(config))
    elif config is not None:
        raise ValueError("config given with config_file=False")

    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "REVERB_")) or k.startswith("RELAY_TEST_")
    }
    child_env["PYTHONUNBUFFERED"] = "1"
    # SIGTERM closes everything at once unless a test asks for the paced drain (its own RELAY_DRAIN_WINDOW):
    # tests stop relay often and should not wait out a 10 s window each time.
    child_env["RELAY_DRAIN_WINDOW"] = "0"
    child_env.update(env or {})
    process = RelayProcess(port, config_path, extra_args, child_env, workdir / f"relay-{port}.log")
    process.wait_ready()
    return process


def to_toml(document: Mapping[str, object]) -> str:
    """Write the subset of TOML relay's config uses: scalars, arrays of scalars, tables, arrays of tables."""
    lines: list[str] = []
    _write_table(lines, (), document)
    return "\n".join(lines) + "\n"


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, object]) -> None:
    nested: list[tuple[str, object]] = []
    for key, value in table.items():
        if value is None:
            continue  # TOML has no null: leaving the key out means "use the default"
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        child = (*path, key)
        header = ".".join(_key(part) for part in child)
        if isinstance(value, Mapping):
            lines.extend(["", f"[{header}]"])
            _write_table(lines, child, value)
        else:
            assert isinstance(value, list | tuple)
            for item in value:
                lines.extend(["", f"[[{header}]]"])
                _write_table(lines, child, item)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list | tuple) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _string(key)


def _string(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes; ensure_ascii=False keeps
    # non-ASCII text literal (TOML rejects the surrogate pairs JSON would write).
    return json.dumps(text, ensure_ascii=False)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value: {value!r}")

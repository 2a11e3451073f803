"""The real Caddy (`caddy run`) reverse-proxying a free loopback port to an upstream such as relay."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .ports import free_port
from .process import ManagedProcess, require_binary
from .relay import http_status
from .timeouts import STARTUP_TIMEOUT

# Answered by Caddy itself, so readiness does not depend on the upstream.
READY_PATH = "/__caddy_ready"


def caddyfile_for(port: int, upstream_port: int, storage: Path) -> str:
    """A plain-HTTP Caddyfile proxying 127.0.0.1:`port` to 127.0.0.1:`upstream_port`.

    WebSocket upgrades pass through reverse_proxy with no extra directive, which is what the
    example Caddyfile at the repository root promises.
    """
    return f"""\
{{
	admin off
	auto_https off
	storage file_system {storage}
}}

http://:{port} {{
	bind 127.0.0.1
	handle {READY_PATH} {{
		respond "ready" 200
	}}
	handle {{
		reverse_proxy 127.0.0.1:{upstream_port}
	}}
}}
"""


class CaddyProcess(ManagedProcess):
    """`caddy run` serving 127.0.0.1:`port` in front of 127.0.0.1:`upstream_port`."""

    def __init__(self, port: int, upstream_port: int, workdir: Path) -> None:
        self.port = port
        self.upstream_port = upstream_port
        binary = require_binary("caddy", "install Debian's caddy (scripts/test does)")
        self.caddyfile = workdir / f"Caddyfile-{port}"
        self.caddyfile.write_text(caddyfile_for(port, upstream_port, workdir / "caddy-storage"))
        # Keep Caddy's autosave and data inside the test's directory, not in the user's home.
        env = {
            "HOME": str(workdir),
            "XDG_CONFIG_HOME": str(workdir / "config"),
            "XDG_DATA_HOME": str(workdir / "data"),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        }
        argv = [binary, "run", "--adapter", "caddyfile", "--config", str(self.caddyfile)]
        super().__init__(f"caddy:{port}", argv, workdir / f"caddy-{port}.log", env=env, cwd=workdir)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, key: str) -> str:
        return f"ws://127.0.0.1:{self.port}/app/{key}?protocol=7&client=js&version=8.6.0&flash=false"

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_until(lambda: http_status(self.http_url + READY_PATH) == 200, "serving HTTP", timeout)


def start_caddy(upstream_port: int, workdir: Path | None = None, port: int | None = None) -> CaddyProcess:
    """Start Caddy in front of 127.0.0.1:`upstream_port` and return once it serves HTTP.

    The caller must stop() it (the `caddy_factory` fixture does).
    """
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="caddy-test-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    process = CaddyProcess(port, upstream_port, workdir)
    process.wait_ready()
    return process

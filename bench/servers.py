"""Start, health-check and stop the servers under test (relay, soketi) or describe an external one.

Every process started here is stopped here by its PID, also on errors and Ctrl-C (see
ServerHandle.stop), and pinned to its own core when asked so the generator does not share it.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.procstat import descendants
from bench.target import Target

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = BENCH_DIR.parent
SOKETI_BIN: Final = BENCH_DIR / "soketi" / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
# Presence churn keeps up to (churners + watcher) members in one channel; both servers default to
# 100 members per channel, which would refuse the churners.
MAX_PRESENCE_MEMBERS: Final = 100_000


@dataclass(frozen=True, slots=True)
class App:
    app_id: str
    key: str
    secret: str


@dataclass
class ServerHandle:
    """A server under test: one Target per node, the PIDs to measure, and what to stop."""

    name: str
    targets: list[Target]
    pids: list[int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    # The Redis the nodes share in the cross-node scenario; measured apart from the nodes.
    redis_pids: list[int] = field(default_factory=list)
    # Processes that hold client sockets (relay --workers N: N), each under its own RLIMIT_NOFILE.
    serving_processes: int = 1
    # The cores the server is pinned to (empty: not pinned), to see what else ran there.
    cores: list[int] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs:
            _stop_process(proc)
        self.procs.clear()


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    tree = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    # Children (relay --workers) should exit with their parent; make sure, one PID at a time.
    for pid in tree[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pin(cmd: list[str], core: str) -> list[str]:
    return ["taskset", "-c", core, *cmd] if core else cmd


async def _wait_ready(
    host: str, port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} before ready; log {log}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), 2.0)
            writer.close()
            if b" 200 " in status:
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout}s; log {log}")


def relay_available(source: Path = REPO_ROOT) -> bool:
    return (source / "relay" / "cli.py").exists()


def soketi_available() -> bool:
    return SOKETI_BIN.exists() and shutil.which("node") is not None


def write_relay_config(path: Path, port: int, app: App, recovery: bool = False) -> None:
    """`recovery`: the app keeps a recovery history of every channel (docs/recovery.md), for its cost."""
    path.write_text(
        f'host = "127.0.0.1"\nport = {port}\n\n'
        "[[apps]]\n"
        f'id = "{app.app_id}"\nkey = "{app.key}"\nsecret = "{app.secret}"\n'
        "enable_client_events = true\n"
        "max_connections = 100000\n"
        "max_message_size = 100000\n"
        "activity_timeout = 120\n"
        'allowed_origins = ["*"]\n'
        f"max_presence_members = {MAX_PRESENCE_MEMBERS}\n" + ("recovery = true\n" if recovery else "")
    )


async def start_relay(
    ports: list[int],
    app: App,
    core: str,
    logdir: Path,
    python: str,
    redis_url: str = "",
    workers: int = 0,
    source: Path = REPO_ROOT,
    extra_args: list[str] | None = None,
    console_token: str = "",
    recovery: bool = False,
) -> ServerHandle:
    """One relay node per port; with several ports (or workers) they share `redis_url`.

    `console_token`: the debug console is on (RELAY_CONSOLE_TOKEN); open_console() opens one."""
    handle = ServerHandle("relay", [], [], serving_processes=max(1, workers) * len(ports))
    try:
        for port in ports:
            config = logdir / f"relay-{port}.toml"
            write_relay_config(config, port, app, recovery)
            cmd = [python, "-m", "relay", "serve", "--config", str(config)]
            if redis_url:
                cmd += ["--redis-url", redis_url]
            if workers:
                cmd += ["--workers", str(workers)]
            cmd += extra_args or []
            log = logdir / f"relay-{port}.log"
            env = os.environ.copy()
            # `source` may be a snapshot of relay (git archive) while the work tree is mid-edit.
            env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
            if console_token:
                env["RELAY_CONSOLE_TOKEN"] = console_token
            proc = _spawn(_pin(cmd, core), log, env, cwd=source)
            handle.procs.append(proc)
            handle.logs.append(log)
            await _wait_ready("127.0.0.1", port, "/up", proc, log)
            handle.targets.append(Target("127.0.0.1", port, app.app_id, app.key, app.secret))
            handle.pids.append(proc.pid)
    except BaseException:
        handle.stop()
        raise
    return handle


async def start_soketi(ports: list[int], app: App, core: str, logdir: Path, redis_url: str = "") -> ServerHandle:
    """One soketi node per port; with several ports they use soketi's Redis adapter."""
    handle = ServerHandle("soketi", [], [], serving_processes=len(ports))
    try:
        for port in ports:
            env = os.environ.copy()
            env.update(
                {
                    "SOKETI_HOST": "127.0.0.1",
                    "SOKETI_PORT": str(port),
                    "SOKETI_DEFAULT_APP_ID": app.app_id,
                    "SOKETI_DEFAULT_APP_KEY": app.key,
                    "SOKETI_DEFAULT_APP_SECRET": app.secret,
                    "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
                    # soketi 1.6.1's CLI reads only the server-wide limit, which apps inherit; the
                    # per-app variable is set too in case a later version reads it.
                    "SOKETI_PRESENCE_MAX_MEMBERS": str(MAX_PRESENCE_MEMBERS),
                    "SOKETI_DEFAULT_APP_MAX_PRESENCE_MEMBERS_PER_CHANNEL": str(MAX_PRESENCE_MEMBERS),
                    # Each node starts a metrics/usage listener; keep two nodes from colliding.
                    "SOKETI_METRICS_SERVER_PORT": str(port + 1000),
                }
            )
            if redis_url:
                host, _, rport = redis_url.removeprefix("redis://").rstrip("/").partition(":")
                env.update(
                    {
                        "SOKETI_ADAPTER_DRIVER": "redis",
                        "SOKETI_DB_REDIS_HOST": host,
                        "SOKETI_DB_REDIS_PORT": rport or "6379",
                    }
                )
            log = logdir / f"soketi-{port}.log"
            proc = _spawn(_pin(["node", str(SOKETI_BIN), "start"], core), log, env)
            handle.procs.append(proc)
            handle.logs.append(log)
            await _wait_ready("127.0.0.1", port, "/ready", proc, log)
            handle.targets.append(Target("127.0.0.1", port, app.app_id, app.key, app.secret))
            handle.pids.append(proc.pid)
    except BaseException:
        handle.stop()
        raise
    return handle


async def open_console(handle: ServerHandle, token: str, core: str, logdir: Path, python: str) -> None:
    """One console stream held open on the first node by bench/console_viewer.py (pinned with the generator,
    stopped before the server); returns once the stream is open. Its summary goes to console-viewer-*.log."""
    target = handle.targets[0]
    log = logdir / f"console-viewer-{time.strftime('%H%M%S')}-{target.port}.log"
    cmd = [python, "-m", "bench.console_viewer", target.host, str(target.port), target.app_id, token]
    proc = _spawn(_pin(cmd, core), log, os.environ.copy())
    handle.procs.insert(0, proc)
    deadline = time.monotonic() + 10
    while b"stream open" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the console viewer did not open its stream; log {log}")
        await asyncio.sleep(0.05)


def _spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # A session of its own keeps the terminal's Ctrl-C away from the server: we stop it ourselves,
        # after the generator, so its last figures are not cut off.
        return subprocess.Popen(
            cmd,
            cwd=str(cwd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


async def start_redis(port: int, core: str, logdir: Path) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on loopback for the cross-node scenario."""
    log = logdir / f"redis-{port}.log"
    cmd = _pin(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], core)
    proc = _spawn(cmd, log, os.environ.copy())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            if (await asyncio.wait_for(reader.readline(), 2.0)).startswith(b"+PONG"):
                writer.close()
                return proc
            writer.close()
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    _stop_process(proc)
    raise RuntimeError(f"redis-server did not answer PING; log {log}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    _stop_process(proc)

"""A real redis-server on a free loopback port, keeping nothing on disk."""

from __future__ import annotations

import socket
from pathlib import Path

from .ports import free_port
from .process import ManagedProcess, require_binary
from .timeouts import STARTUP_TIMEOUT


def redis_answers_ping(port: int) -> bool:
    """True when a Redis server on 127.0.0.1:`port` answers PING with +PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_argv(port: int, workdir: Path, *options: str) -> list[str]:
    """redis-server on 127.0.0.1:`port` in the foreground, keeping nothing on disk, with `options` added."""
    binary = require_binary("redis-server", "install Debian's redis-server (scripts/test does)")
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        *options,
        # Tests must start from an empty server and leave nothing behind.
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip


class RedisServerProcess(ManagedProcess):
    """One redis-server on 127.0.0.1:`port`; restart() brings it back on the same port, empty."""

    def __init__(self, name: str, port: int, workdir: Path, *options: str) -> None:
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        argv = redis_server_argv(port, workdir, *options)
        super().__init__(f"{name}:{port}", argv, workdir / f"redis-{port}.log", cwd=workdir)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_until(lambda: redis_answers_ping(self.port), "answering PING", timeout)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start again on the same port after stop() or kill(), and wait for PING."""
        self.stop()
        self.spawn()
        self.wait_ready(timeout)


class RedisProcess(RedisServerProcess):
    """redis-server bound to 127.0.0.1:`port`. Use `.url` for clients.

    kill() simulates a crash (SIGKILL); restart() brings it back on the same port, empty.
    """

    def __init__(self, port: int, workdir: Path) -> None:
        super().__init__("redis-server", port, workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(tmp_path: Path, port: int | None = None) -> RedisProcess:
    """Start redis-server in `tmp_path`/redis-<port> and return once it answers PING.

    The caller must stop() it (the `redis_process` fixture does).
    """
    port = port if port is not None else free_port()
    process = RedisProcess(port, tmp_path / f"redis-{port}")
    process.wait_ready()
    return process

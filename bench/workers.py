"""Parent-side handles on subscriber worker processes (bench/worker.py): spawn, command, merge."""

from __future__ import annotations

import asyncio
import base64
import sys
from array import array
from pathlib import Path
from typing import Any

import orjson

Command = dict[str, Any]
REPO_ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, cmd: Command, timeout: float = 300.0) -> Command:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
            await self.proc.stdin.drain()
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} exited (code {self.proc.returncode})")
        reply: Command = orjson.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.pid}: {reply['error']}")
        return reply


C_RECEIVER = REPO_ROOT / "bench" / "c" / "receiver"
C_SOURCE = REPO_ROOT / "bench" / "c" / "receiver.c"


def c_receiver_ready() -> bool:
    """True when the C receiver is built and newer than its source."""
    return C_RECEIVER.exists() and C_RECEIVER.stat().st_mtime >= C_SOURCE.stat().st_mtime


class WorkerPool:
    """`size` worker processes of one kind ("python": bench/worker.py, any scenario; "c":
    bench/c/receiver, public-channel subscribers only); commands go to all of them at once."""

    def __init__(self, size: int, kind: str = "python") -> None:
        self.size = size
        self.kind = kind
        self.workers: list[WorkerProcess] = []

    async def start(self) -> None:
        argv = [str(C_RECEIVER)] if self.kind == "c" else [sys.executable, "-m", "bench.worker"]
        for _ in range(self.size):
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=str(REPO_ROOT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**30
            )
            self.workers.append(WorkerProcess(proc))

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def each(self, cmds: list[Command], timeout: float = 300.0) -> list[Command]:
        return list(await asyncio.gather(*(w.call(c, timeout) for w, c in zip(self.workers, cmds, strict=True))))

    async def all(self, cmd: Command, timeout: float = 300.0) -> list[Command]:
        return await self.each([cmd] * self.size, timeout)

    async def connect(self, base: Command, count: int, timeout: float) -> Command:
        """Spread `count` connections over the workers; global indices stay contiguous per worker.
        Returns the summed reply (ok, failed, errors) and the slowest worker's elapsed time."""
        cmds = []
        first = int(base.get("first_index", 0))
        for n, share in enumerate(split(count, self.size)):
            # Each worker its own loopback source addresses (the C receiver uses the 64 after this
            # one): one address reaches one server port from at most ~28k ephemeral ports
            # (net.ipv4.ip_local_port_range), and finding a free one slows down well before that.
            source = f"127.{n + 1}.0.0"
            cmds.append(
                {**base, "cmd": "connect", "count": share, "first_index": first, "timeout": timeout, "source": source}
            )
            first += share
        replies = await self.each(cmds, timeout + 30.0)
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "elapsed": max(r["elapsed"] for r in replies),
            "errors": [e for r in replies for e in r["errors"]][:5]
            + [r["last_error"] for r in replies if r["last_error"]][:2],
        }

    async def counters(self, reset: bool = False) -> Command:
        """Summed counters of every worker, without latencies."""
        replies = await self.all({"cmd": "stats", "reset": reset})
        keys = ("received", "errors", "closed", "member_added", "member_removed", "member_frames", "joins", "open")
        out: Command = {k: sum(r[k] for r in replies) for k in keys}
        out["last_error"] = next((r["last_error"] for r in replies if r["last_error"]), "")
        return out

    async def collect(self, reset: bool = True) -> tuple[Command, array[int]]:
        """Summed counters and every recorded latency (µs)."""
        replies = await self.all({"cmd": "stats", "reset": reset})
        latencies: array[int] = array("q")
        for r in replies:
            latencies.frombytes(base64.b64decode(r["latencies"]))
        keys = ("received", "errors", "closed", "member_added", "member_removed", "member_frames", "joins", "open")
        out: Command = {k: sum(r[k] for r in replies) for k in keys}
        out["last_error"] = next((r["last_error"] for r in replies if r["last_error"]), "")
        return out, latencies

    async def close_connections(self) -> None:
        await self.all({"cmd": "close", "timeout": 10.0}, timeout=60.0)

    async def stop(self) -> None:
        for w in self.workers:
            if w.proc.returncode is None and w.proc.stdin is not None:
                try:
                    w.proc.stdin.write(b'{"cmd":"exit"}\n')
                except (RuntimeError, OSError):
                    w.proc.kill()
        for w in self.workers:
            try:
                async with asyncio.timeout(15.0):
                    await w.proc.wait()
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        self.workers.clear()


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]

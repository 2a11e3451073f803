"""The C HTTP API publisher (bench/c/publisher): signed POST /events as fast as the server answers,
run as a child process pinned with the rest of the generator; its own CPU time and the TCP
connections it had to open come back with the request counts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from bench.target import Target

C_PUBLISHER: Final = Path(__file__).resolve().parent / "c" / "publisher"
C_PUBLISHER_SOURCE: Final = C_PUBLISHER.with_name("publisher.c")


def c_publisher_ready() -> bool:
    """True when the C publisher is built and newer than its source."""
    return C_PUBLISHER.exists() and C_PUBLISHER.stat().st_mtime >= C_PUBLISHER_SOURCE.stat().st_mtime


@dataclass(frozen=True, slots=True)
class CPublishRun:
    sent: int
    ok: int
    failed: int
    connects: int
    elapsed: float
    cpu_seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    last_error: str


async def publish_as_fast(target: Target, channel: str, connections: int, count: int, seconds: float) -> CPublishRun:
    """Up to `count` requests or `seconds` (the C side adds at most 5 s of grace for answers)."""
    argv = [
        str(C_PUBLISHER),
        target.host,
        str(target.port),
        target.app_id,
        target.key,
        target.secret,
        channel,
        str(connections),
        str(count),
        str(seconds),
    ]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(seconds + 30.0):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"bench/c/publisher exited with {proc.returncode}")
    r = orjson.loads(out)
    return CPublishRun(
        int(r["sent"]),
        int(r["ok"]),
        int(r["failed"]),
        int(r["connects"]),
        float(r["elapsed"]),
        float(r["cpu_seconds"]),
        r["p50_us"] / 1000.0,
        r["p99_us"] / 1000.0,
        r["max_us"] / 1000.0,
        str(r["last_error"]),
    )

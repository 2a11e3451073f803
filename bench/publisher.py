"""Signed HTTP API publishing (POST /events and /batch_events) at a fixed rate or as fast as the
server answers, each event's data carrying its publish time."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from bench.httpclient import HttpConnection, HttpPool
from bench.signing import sign_query
from bench.target import Target
from bench.wire import EVENT_NAME, event_data

RequestBuilder = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class PublishReport:
    sent: int
    ok: int
    failed: int
    elapsed: float
    # How far the fixed-rate schedule fell behind at worst: the server (or we) could not keep up.
    max_lag: float
    last_error: str


def _request(target: Target, path: str, body: bytes) -> bytes:
    query = sign_query("POST", path, body, target.key, target.secret)
    return (
        f"POST {path}?{query} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _now_us() -> int:
    return time.monotonic_ns() // 1000


def events_builder(target: Target, channels_for: Callable[[int], Sequence[str]]) -> RequestBuilder:
    """POST /apps/<id>/events, request `seq` going to channels_for(seq)."""
    path = f"/apps/{target.app_id}/events"

    def build(seq: int) -> bytes:
        body = orjson.dumps(
            {"name": EVENT_NAME, "data": event_data(_now_us(), seq), "channels": list(channels_for(seq))}
        )
        return _request(target, path, body)

    return build


def batch_builder(target: Target, channels_for: Callable[[int], Sequence[str]]) -> RequestBuilder:
    """POST /apps/<id>/batch_events with one event per channel of channels_for(seq)."""
    path = f"/apps/{target.app_id}/batch_events"

    def build(seq: int) -> bytes:
        now = _now_us()
        batch = [{"name": EVENT_NAME, "channel": ch, "data": event_data(now, seq)} for ch in channels_for(seq)]
        return _request(target, path, orjson.dumps({"batch": batch}))

    return build


def _is_ok(status: int, body: bytes) -> bool:
    # soketi 1.6.1 answers errors with HTTP 200 and a JSON error body, so look at the body too.
    return status == 200 and b'"error"' not in body


class Publisher:
    def __init__(self, target: Target, connections: int) -> None:
        self.pool = HttpPool(target.host, target.port, connections)
        self.ok = 0
        self.failed = 0
        self.last_error = ""
        # Request round-trip times of as_fast(), in microseconds.
        self.request_latency_us: array[int] = array("q")

    async def open(self) -> None:
        await self.pool.open()

    def close(self) -> None:
        self.pool.close()

    def _fire(self, conn: HttpConnection, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        fut = conn.request(request)

        def done(f: asyncio.Future[tuple[int, bytes]]) -> None:
            self.pool.release(conn)
            if f.exception() is None and _is_ok(*f.result()):
                self.ok += 1
            else:
                self.failed += 1
                self.last_error = repr(f.exception()) if f.exception() else f.result()[1][:200].decode(errors="replace")

        fut.add_done_callback(done)
        return fut

    def _reset(self) -> None:
        self.ok = self.failed = 0
        self.last_error = ""
        self.request_latency_us = array("q")

    async def at_rate(self, build: RequestBuilder, rate: float, count: int, time_limit: float) -> PublishReport:
        """Send `count` requests on a fixed schedule of `rate` per second, stopping at `time_limit`
        seconds; requests due while every connection is busy go out late (reported as lag)."""
        self._reset()
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending: list[asyncio.Future[tuple[int, bytes]]] = []
        sent = 0
        max_lag = 0.0
        while sent < count:
            now = loop.time()
            if now - start > time_limit:
                break
            due = min(count, int((now - start) * rate) + 1)
            while sent < due:
                conn = await self.pool.acquire()
                max_lag = max(max_lag, loop.time() - (start + sent / rate))
                pending.append(self._fire(conn, build(sent)))
                sent += 1
            if len(pending) > 4096:
                pending = [f for f in pending if not f.done()]
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
        if pending:
            await asyncio.wait(pending, timeout=10.0)
        return PublishReport(sent, self.ok, self.failed, loop.time() - start, max_lag, self.last_error)

    async def as_fast(self, build: RequestBuilder, count: int, time_limit: float) -> PublishReport:
        """Send up to `count` requests, one in flight per connection, until `time_limit` seconds."""
        self._reset()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + time_limit
        next_seq = 0

        latencies = self.request_latency_us

        async def lane() -> None:
            nonlocal next_seq
            while next_seq < count and loop.time() < deadline:
                seq = next_seq
                next_seq += 1
                conn = await self.pool.acquire()
                sent = time.monotonic_ns()
                try:
                    await self._fire(conn, build(seq))
                except ConnectionError:
                    pass  # counted as failed by the done callback
                latencies.append((time.monotonic_ns() - sent) // 1000)

        await asyncio.gather(*(lane() for _ in range(self.pool.size)))
        return PublishReport(next_seq, self.ok, self.failed, loop.time() - start, 0.0, self.last_error)

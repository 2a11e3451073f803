"""A lean Pusher client on asyncio.Protocol: upgrade, frame parsing, subscribe, presence churn.

All connections of one worker process share a Stats. The receive loop counts bench events and
records their latency by finding the timestamp mark in the raw frame, without decoding JSON; only
the rare control frames (connection_established, subscription_succeeded, member_*, errors) are
looked at more closely.
"""

import asyncio
import time
from array import array
from typing import cast

import orjson

from bench.signing import channel_auth
from bench.wire import (
    CLOSE_FRAME,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PONG_FRAME,
    TS_DIGITS,
    TS_MARK,
    WS_ACCEPT,
    client_frame,
    subscribe_frame,
    unsubscribe_frame,
)

_MARK_LEN = len(TS_MARK)


class Stats:
    """Counters shared by every connection of a worker; reset between measurement windows."""

    __slots__ = (
        "closed",
        "errors",
        "joins",
        "last_error",
        "latencies",
        "member_added",
        "member_frames",
        "member_removed",
        "received",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.received = 0
        # Publish-to-receive latency of every bench event, in microseconds.
        self.latencies = array("q")
        self.errors = 0
        self.last_error = ""
        self.closed = 0
        self.member_added = 0
        self.member_removed = 0
        # member_added/member_removed frames received by any connection, churners included: the
        # fan-out work a presence churn really asks of the server.
        self.member_frames = 0
        self.joins = 0


class PusherClient(asyncio.Protocol):
    """One WebSocket connection. `subscribed` resolves after the first subscription_succeeded;
    `churn_done` after the last presence leave of a churn run."""

    def __init__(
        self,
        stats: Stats,
        request: bytes,
        key: str,
        secret: str,
        channel: str = "",
        user_id: str = "",
        watcher: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.stats = stats
        self.request = request
        self.key = key
        self.secret = secret
        self.channel = channel
        self.user_id = user_id
        # Only the watcher counts member events: churners see each other's too.
        self.watcher = watcher
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.pending = b""
        self.socket_id = ""
        self.closing = False
        self.established: asyncio.Future[None] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.churn_done: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.churn_left = 0
        self.churn_prefix = ""

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.stats.closed += 1
        if not self.lost.done():
            self.lost.set_result(None)
        for fut in (self.established, self.subscribed, self.churn_done):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))
                # Nobody may await it (a churner that already finished): mark it retrieved.
                fut.exception()

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        if not self.upgraded:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                self.pending = data
                return
            self._check_upgrade(data[:head_end])
            data = data[head_end + 4 :]
            self.upgraded = True
        now_us = time.monotonic_ns() // 1000
        latencies = self.stats.latencies
        got = 0
        n = len(data)
        pos = 0
        # Server frames are unmasked; the parser reads the length forms of RFC 6455 5.2 inline
        # because this loop runs once per delivered message.
        while pos + 2 <= n:
            length = data[pos + 1] & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if pos + 4 > n:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if pos + 10 > n:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = data[pos] & 0x0F
            if opcode == OP_TEXT:
                i = data.find(TS_MARK, start, end)
                if i >= 0:
                    got += 1
                    latencies.append(now_us - int(data[i + _MARK_LEN : i + _MARK_LEN + TS_DIGITS]))
                else:
                    self._on_control(data[start:end])
            else:
                self._on_opcode(opcode, data[start:end])
            pos = end
        self.stats.received += got
        self.pending = data[pos:] if pos < n else b""

    # -- actions ----------------------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_FRAME)
            self.transport.close()

    def subscribe(self) -> None:
        if self.user_id:
            channel_data = orjson.dumps({"user_id": self.user_id, "user_info": {"bench": 1}}).decode()
            auth = channel_auth(self.key, self.secret, self.socket_id, self.channel, channel_data)
            self.write(subscribe_frame(self.channel, auth, channel_data))
        elif self.channel.startswith("private-"):
            self.write(subscribe_frame(self.channel, channel_auth(self.key, self.secret, self.socket_id, self.channel)))
        else:
            self.write(subscribe_frame(self.channel))

    def start_churn(self, channel: str, cycles: int, prefix: str) -> None:
        """Join and leave `channel` `cycles` times as a fresh presence user each time; the next
        join is sent as soon as the server confirms the previous one."""
        self.channel = channel
        self.churn_prefix = prefix
        self.churn_left = cycles - 1
        self.user_id = f"{prefix}-{cycles}"
        self.subscribe()

    # -- receive helpers --------------------------------------------------------------------------

    def _check_upgrade(self, head: bytes) -> None:
        if not head.startswith(b"HTTP/1.1 101") or WS_ACCEPT not in head:
            self._fail("upgrade refused: " + head.split(b"\r\n", 1)[0].decode(errors="replace"))

    def _on_control(self, payload: bytes) -> None:
        if b"pusher_internal:member_" in payload:
            self.stats.member_frames += 1
            if self.watcher:
                if b"member_added" in payload:
                    self.stats.member_added += 1
                else:
                    self.stats.member_removed += 1
        elif b"pusher_internal:subscription_succeeded" in payload:
            self._on_subscribed()
        elif b"pusher:connection_established" in payload:
            inner = orjson.loads(orjson.loads(payload)["data"])
            self.socket_id = inner["socket_id"]
            if not self.established.done():
                self.established.set_result(None)
            if self.channel:
                self.subscribe()
        elif b"pusher:ping" in payload:
            self.write(PONG_FRAME)
        elif b"error" in payload:
            self.stats.errors += 1
            self.stats.last_error = payload[:300].decode(errors="replace")

    def _on_subscribed(self) -> None:
        if not self.subscribed.done():
            self.subscribed.set_result(None)
        if not self.churn_prefix:
            return
        self.stats.joins += 1
        self.write(unsubscribe_frame(self.channel))
        if self.churn_left > 0:
            self.user_id = f"{self.churn_prefix}-{self.churn_left}"
            self.churn_left -= 1
            self.subscribe()
        elif not self.churn_done.done():
            self.churn_done.set_result(None)

    def _on_opcode(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.write(client_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._fail(f"server closed with {code} {payload[2:].decode(errors='replace')}")

    def _fail(self, why: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = why
        if self.transport is not None:
            self.transport.close()

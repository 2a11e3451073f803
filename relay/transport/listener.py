"""The lean transport's listener: reads each new socket's first request head and decides who serves it.

`LeanListener` is the listening socket's protocol factory. Each accepted socket starts as a `HeadReader`;
a valid upgrade to `{path}/app/<key>` is answered 101 here and the socket's protocol becomes a
`LeanConnection` (relay.transport.websocket). A signed publish goes to `FastHttp` (relay.transport.http_fast).
Anything else, with the bytes read so far, goes to aiohttp (relay.transport.handover), so the rest of the
REST API, /up, /metrics, keep-alive and the 4005 catch-all behave exactly as with the aiohttp transport.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

from relay import wsframe
from relay.http_api import HttpApi
from relay.node import Node
from relay.protocol import errors
from relay.protocol.ids import new_socket_id
from relay.transport.handshake import (
    HEAD_TOO_LARGE,
    MAX_HEAD_SIZE,
    RATE_LIMITED_MESSAGE,
    count_rate_limited,
    count_refusal,
    may_be_upgrade,
    parse_upgrade,
    peer_address,
    refusal,
    switching_protocols,
)
from relay.transport.http_fast import FastHttp, FastPath, HandOver
from relay.transport.tasks import TaskSet
from relay.transport.websocket import LeanConnection, WebSocketShared

# A socket that sends no complete request head within this many seconds is closed (slowloris).
HEAD_TIMEOUT: Final = 30.0


class LeanListener:
    """The protocol factory of the listening socket(s): one object per server, not per connection."""

    __slots__ = ("_head_timer", "app_path", "app_prefix", "fast", "hand_over", "heads", "node", "tasks", "websocket")

    def __init__(
        self,
        node: Node,
        path: str,
        max_outbound_buffer: int,
        hand_over: HandOver,
        api: HttpApi | None = None,
        max_request_size: int = 0,
    ) -> None:
        self.node = node
        self.tasks = TaskSet(asyncio.get_running_loop())
        self.websocket = WebSocketShared(node, max_outbound_buffer, self.tasks)
        self.app_prefix = f"{path}/app/"
        self.app_path = self.app_prefix.encode()
        self.hand_over = hand_over
        # With `api`, signed publishes are answered by the fast path instead of aiohttp.
        self.fast = None if api is None else FastPath(api, node, path, max_request_size, self.tasks, hand_over)
        # Sockets still sending their request head, oldest first, with the loop time each was accepted:
        # one timer for all of them instead of a call_later per connection (the head timeout).
        self.heads: dict[HeadReader, float] = {}
        self._head_timer: asyncio.TimerHandle | None = None

    def __call__(self) -> HeadReader:
        return HeadReader(self)

    def head_started(self, reader: HeadReader) -> None:
        loop = self.tasks.loop
        self.heads[reader] = loop.time()
        if self._head_timer is None:
            self._head_timer = loop.call_later(HEAD_TIMEOUT, self._expire_heads)

    def _expire_heads(self) -> None:
        """Drop the sockets whose head has taken HEAD_TIMEOUT; wake again when the oldest left is due."""
        self._head_timer = None
        heads = self.heads
        loop = self.tasks.loop
        oldest_allowed = loop.time() - HEAD_TIMEOUT
        while heads:
            reader, accepted = next(iter(heads.items()))
            if accepted > oldest_allowed:
                self._head_timer = loop.call_at(accepted + HEAD_TIMEOUT, self._expire_heads)
                return
            del heads[reader]
            reader.expire()

    async def drain(self, timeout: float) -> bool:
        """Wait until every connection is gone and cleaned up (shutdown, after close_connections).

        A closed socket's clean-up starts only when its transport reports connection_lost, after the
        close frame is written: so this waits on the node's connections too, not only on tasks.
        """
        loop = self.tasks.loop
        deadline = loop.time() + timeout
        while self.node.connections or self.tasks:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def abort_connections(self) -> None:
        """Drop every lean WebSocket without a close handshake (shutdown, for clients that stopped reading)."""
        for connection in list(self.node.connections.values()):
            if isinstance(connection, LeanConnection):
                connection.abort()


class HeadReader(asyncio.Protocol):
    """Reads one request head, then hands the socket to a LeanConnection, the fast path or aiohttp."""

    __slots__ = ("_buffer", "_listener", "_transport")

    def __init__(self, listener: LeanListener) -> None:
        self._listener = listener
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._listener.head_started(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_head()

    def eof_received(self) -> bool | None:
        return None  # close: a request head cut short gets no answer

    def expire(self) -> None:
        """No complete request head within HEAD_TIMEOUT (slowloris): drop the socket."""
        if self._transport is not None:
            self._transport.abort()

    def _forget_head(self) -> None:
        self._listener.heads.pop(self, None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        transport = self._transport
        assert transport is not None
        listener = self._listener
        fast = listener.fast
        if fast is not None and buffer[:1] == b"P" and fast.may_serve(buffer):
            self._to_fast_path(transport, buffer, fast)
            return
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            # Hand plain HTTP over as soon as the first bytes rule out an upgrade to /app/.
            prefix = b"GET " + listener.app_path
            if not (buffer.startswith(prefix) or prefix.startswith(buffer)):
                self._hand_over(transport, buffer)
            elif len(buffer) > MAX_HEAD_SIZE:
                self._too_large(transport)
            else:
                self._buffer = buffer
            return
        if not may_be_upgrade(buffer[:line_end], listener.app_path):
            self._hand_over(transport, buffer)
            return
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buffer) > MAX_HEAD_SIZE:
                self._too_large(transport)
            else:
                self._buffer = buffer
            return
        if head_end > MAX_HEAD_SIZE:
            self._too_large(transport)
            return
        upgrade = parse_upgrade(buffer[:head_end], listener.app_prefix)
        if upgrade is None:
            self._hand_over(transport, buffer)
            return
        self._forget_head()
        self._buffer = b""
        node = listener.node
        app = node.apps.by_key(upgrade.key)
        accepted = switching_protocols(upgrade.accept)
        if not node.accepting:
            # 4100, not 4200: a 4200-range first frame makes pusher-js reconnect in a tight loop.
            _refuse(transport, accepted, errors.OVER_CAPACITY, "Server is shutting down")
            return
        refused = refusal(app, upgrade.key, upgrade.protocol, upgrade.origin)
        if refused is not None or app is None:
            assert refused is not None
            count_refusal(node.metrics, app, refused[0])
            _refuse(transport, accepted, *refused)
            return
        admission = node.admission
        # getpeername is a system call: made only when a per-address limit will read its answer.
        peer = peer_address(transport) if admission.per_address else ""
        limited = admission.admit(peer, upgrade.forwarded_for)
        if limited is not None:
            count_rate_limited(node.metrics, app, limited)
            _refuse(transport, accepted, errors.OVER_CAPACITY, RATE_LIMITED_MESSAGE)
            return
        socket_id = new_socket_id()
        session = node.new_session(socket_id, app, listener.tasks.loop.time())
        connection = LeanConnection(listener.websocket, socket_id, app, session, transport)
        transport.set_protocol(connection)
        rest = buffer[head_end + 4 :]
        connection.start(upgrade.query, accepted, frames_follow=bool(rest))
        if rest:
            connection.data_received(rest)

    def _hand_over(self, transport: asyncio.Transport, buffer: bytes) -> None:
        """From now on the socket is aiohttp's, as if its own server had accepted it."""
        self._forget_head()
        self._buffer = b""
        self._listener.hand_over(transport, buffer)

    def _to_fast_path(self, transport: asyncio.Transport, buffer: bytes, fast: FastPath) -> None:
        """A signed publish, most likely: FastHttp reads it (and hands over to aiohttp if it is not)."""
        self._forget_head()
        self._buffer = b""
        protocol = FastHttp(fast, transport)
        transport.set_protocol(protocol)
        protocol.data_received(buffer)

    def _too_large(self, transport: asyncio.Transport) -> None:
        self._forget_head()
        self._buffer = b""
        transport.write(HEAD_TOO_LARGE)
        transport.close()


def _refuse(transport: asyncio.Transport, accepted: bytes, code: int, message: str) -> None:
    """The 101, the pusher:error and the close frame, in one write."""
    error = wsframe.text_frame(errors.encode_error(code, message))
    transport.write(accepted + error + wsframe.close_frame(code, message))
    transport.close()

"""The WebSocket endpoint: upgrade, read loop, coalesced outbound writes with a bounded buffer, close codes.

Knows nothing of Pusher's JSON shapes beyond the connection-level refusals (PROTOCOL.md §1.1). Frames
queued for a connection during one event-loop iteration go out in one write, in order.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from typing import Final, cast
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from relay import wsframe
from relay.apps import AppDirectory
from relay.config import AppConfig
from relay.node import Node
from relay.protocol import errors
from relay.protocol.ids import new_socket_id
from relay.protocol.session import Session

logger = logging.getLogger(__name__)

MIN_PROTOCOL: Final = 4
MAX_PROTOCOL: Final = 7
# aiohttp closes with 1009 above this; below it, oversize messages get a pusher:error and the socket stays.
HARD_MESSAGE_LIMIT_FACTOR: Final = 8


class Outbox:
    """Connections with queued frames, flushed once per event-loop iteration."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[WebSocketConnection] = []
        self._scheduled = False

    def mark(self, connection: WebSocketConnection) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for connection in dirty:
            connection.flush()


class WebSocketConnection:
    """node.Connection over an upgraded aiohttp request; writes pre-built frames to the raw transport."""

    __slots__ = ("_limit", "_outbox", "_pending", "_transport", "app", "closed", "session", "socket_id")

    def __init__(
        self,
        socket_id: str,
        app: AppConfig,
        session: Session,
        transport: asyncio.Transport,
        outbox: Outbox,
        max_outbound_buffer: int,
    ) -> None:
        self.socket_id = socket_id
        self.app = app
        self.session = session
        self._transport = transport
        self._outbox = outbox
        self._limit = max_outbound_buffer
        self._pending: list[bytes] | None = None
        self.closed = False

    def send(self, frame: bytes) -> None:
        self.send_wire(wsframe.text_frame(frame))

    def send_wire(self, wire: bytes) -> None:
        if self.closed:
            return
        pending = self._pending
        if pending is None:
            self._pending = [wire]
            self._outbox.mark(self)
        else:
            pending.append(wire)

    def flush(self) -> None:
        pending = self._pending
        self._pending = None
        if pending is None or self.closed:
            return
        transport = self._transport
        if transport.is_closing():
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if transport.get_write_buffer_size() > self._limit:
            # A client that stops reading must not make us buffer without bound: drop it, others go on.
            logger.info("closing slow consumer socket_id=%s app_id=%s", self.socket_id, self.app.id)
            self.closed = True
            transport.abort()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        transport = self._transport
        if not transport.is_closing():
            transport.write(wsframe.close_frame(code, reason))
            transport.close()


def _origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Reverb's rule: `*`, or a host pattern (`*.example.com`) matching the Origin header's host."""
    if not origin or "*" in allowed:
        return True
    host = urlsplit(origin).hostname or ""
    return any(fnmatch.fnmatchcase(host, pattern) or origin == pattern for pattern in allowed)


def _refusal(request: web.Request, app: AppConfig | None) -> tuple[int, str] | None:
    """Connection-level errors, checked before the session exists (PROTOCOL.md §1.1, §3)."""
    if app is None:
        return errors.APP_DOES_NOT_EXIST, f"Application does not exist: {request.match_info.get('key', '')}"
    if not app.enabled:
        return errors.APP_DISABLED, "Application is disabled"
    protocol = request.query.get("protocol")
    if protocol is None or protocol == "":
        return errors.NO_PROTOCOL_VERSION, "No protocol version supplied"
    if not protocol.isdigit():
        return errors.INVALID_VERSION_FORMAT, f"Invalid version string format: {protocol[:32]}"
    if not MIN_PROTOCOL <= int(protocol) <= MAX_PROTOCOL:
        return errors.UNSUPPORTED_PROTOCOL_VERSION, f"Unsupported protocol version: {protocol}"
    if not _origin_allowed(request.headers.get("Origin", ""), app.allowed_origins):
        return errors.CONNECTION_UNAUTHORIZED, "Origin not allowed"
    return None


class WebSocketEndpoint:
    """The aiohttp handlers for `/app/{key}` and for WebSocket upgrades to any other path (4005)."""

    def __init__(self, node: Node, apps: AppDirectory, max_outbound_buffer: int) -> None:
        self._node = node
        self._apps = apps
        self._max_outbound_buffer = max_outbound_buffer
        self._outbox: Outbox | None = None

    async def _upgrade(self, request: web.Request, max_msg_size: int) -> web.WebSocketResponse | None:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=max_msg_size, compress=False)
        if not ws.can_prepare(request).ok:
            return None
        await ws.prepare(request)
        return ws

    async def refuse(self, ws: web.WebSocketResponse, code: int, message: str) -> web.WebSocketResponse:
        await ws.send_str(errors.encode_error(code, message).decode())
        await ws.close(code=code, message=message.encode()[:120])
        return ws

    async def wrong_path(self, request: web.Request) -> web.StreamResponse:
        ws = await self._upgrade(request, 65536)
        if ws is None:
            raise web.HTTPNotFound(text='{"error":"Not found"}', content_type="application/json")
        return await self.refuse(ws, errors.PATH_NOT_FOUND, f"Path not found: {request.path[:100]}")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        app = self._apps.by_key(request.match_info["key"])
        limit = (app.max_message_size if app else 10_000) * HARD_MESSAGE_LIMIT_FACTOR
        ws = await self._upgrade(request, limit)
        if ws is None:
            raise web.HTTPBadRequest(text='{"error":"WebSocket upgrade expected"}', content_type="application/json")
        if not self._node.accepting:
            # 4100, not 4200: a 4200-range first frame makes pusher-js reconnect in a tight loop.
            return await self.refuse(ws, errors.OVER_CAPACITY, "Server is shutting down")
        refusal = _refusal(request, app)
        if refusal is not None or app is None:
            assert refusal is not None
            self._node.metrics.connections_refused += 1
            return await self.refuse(ws, *refusal)
        transport = request.transport
        if transport is None:
            return ws
        loop = asyncio.get_running_loop()
        if self._outbox is None:
            self._outbox = Outbox(loop)
        socket_id = new_socket_id()
        session = self._node.new_session(socket_id, app, loop.time())
        connection = WebSocketConnection(
            socket_id, app, session, cast(asyncio.Transport, transport), self._outbox, self._max_outbound_buffer
        )
        try:
            if await self._node.open(connection):
                await self._read_loop(ws, connection)
        finally:
            connection.closed = True
            await self._node.disconnect(connection)
        return ws

    async def _read_loop(self, ws: web.WebSocketResponse, connection: WebSocketConnection) -> None:
        node = self._node
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                try:
                    await node.receive(connection, message.data)
                except Exception:
                    logger.exception("handling a frame failed for socket_id=%s", connection.socket_id)
            elif message.type is WSMsgType.BINARY:
                connection.send(errors.encode_error(errors.INVALID_MESSAGE_FORMAT, "Binary frames are not supported"))
            if connection.closed:
                break

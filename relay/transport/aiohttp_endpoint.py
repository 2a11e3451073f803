"""The WebSocket endpoint on aiohttp's WebSocketResponse: upgrade, read loop, coalesced writes, close codes.

Used when `transport = "aiohttp"` and whenever relay is embedded as a plain aiohttp application; the lean
protocol (relay.transport.listener) answers the same URLs with the same bytes, at a fraction of the memory.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from relay import wsframe
from relay.apps import AppDirectory
from relay.config import AppConfig
from relay.metrics import Metrics
from relay.node import Node
from relay.protocol import errors
from relay.protocol.ids import new_socket_id
from relay.protocol.session import Session
from relay.transport.handshake import RATE_LIMITED_MESSAGE, count_rate_limited, count_refusal, refusal
from relay.transport.limits import HARD_MESSAGE_LIMIT_FACTOR
from relay.transport.outbox import Outbox, cut_slow_consumer, write_frames

logger = logging.getLogger(__name__)


class WebSocketConnection:
    """node.Connection over an upgraded aiohttp request; writes pre-built frames to the raw transport."""

    __slots__ = (
        "_limit",
        "_metrics",
        "_outbox",
        "_pending",
        "_transport",
        "app",
        "close_code",
        "closed",
        "session",
        "socket_id",
    )

    def __init__(
        self,
        socket_id: str,
        app: AppConfig,
        session: Session,
        transport: asyncio.Transport,
        outbox: Outbox,
        max_outbound_buffer: int,
        metrics: Metrics,
    ) -> None:
        self.socket_id = socket_id
        self.app = app
        self.session = session
        self._transport = transport
        self._outbox = outbox
        self._limit = max_outbound_buffer
        self._metrics = metrics
        self._pending: list[bytes] | None = None
        self.closed = False
        self.close_code = wsframe.ABNORMAL_CLOSURE  # until a close frame is sent or received

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
        if not write_frames(self._transport, pending, self._limit):
            cut_slow_consumer(self._transport, self._metrics, self)
            self.closed = True

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.close_code = code
        self.flush()
        self.closed = True
        transport = self._transport
        if not transport.is_closing():
            transport.write(wsframe.close_frame(code, reason))
            transport.close()


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
        refused = refusal(
            app, request.match_info["key"], request.query.get("protocol"), request.headers.get("Origin", "")
        )
        if refused is not None or app is None:
            assert refused is not None
            count_refusal(self._node.metrics, app, refused[0])
            return await self.refuse(ws, *refused)
        forwarded = request.headers.getall("X-Forwarded-For", [])
        limited = self._node.admission.admit(request.remote or "", ", ".join(forwarded) or None)
        if limited is not None:
            count_rate_limited(self._node.metrics, app, limited)
            return await self.refuse(ws, errors.OVER_CAPACITY, RATE_LIMITED_MESSAGE)
        transport = request.transport
        if transport is None:
            return ws
        loop = asyncio.get_running_loop()
        if self._outbox is None:
            self._outbox = Outbox(loop)
        socket_id = new_socket_id()
        session = self._node.new_session(socket_id, app, loop.time())
        connection = WebSocketConnection(
            socket_id,
            app,
            session,
            transport,
            self._outbox,
            self._max_outbound_buffer,
            self._node.metrics,
        )
        try:
            if await self._node.open(connection, request.rel_url.raw_query_string):
                await self._read_loop(ws, connection)
        finally:
            connection.closed = True
            if connection.close_code == wsframe.ABNORMAL_CLOSURE and ws.close_code is not None:
                connection.close_code = ws.close_code  # the client's close frame
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

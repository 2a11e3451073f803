"""The lean WebSocket transport: handshake and frames on the raw asyncio transport, HTTP handed to aiohttp.

`LeanServer` is the listening socket's protocol factory. Each accepted socket starts as a `HeadReader`;
a valid upgrade to `{path}/app/<key>` is answered 101 here and the transport's protocol becomes a
`LeanConnection` (the node's Connection and the frame reader in one small object). Anything else, with
the bytes read so far, goes to a fresh aiohttp RequestHandler, so the REST API, /up, /metrics, keep-alive
and the 4005 catch-all behave exactly as with the aiohttp transport.

Idle cost is the point: no task, future, timer or buffer is held by an idle connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

from relay import wsframe
from relay.apps import AppDirectory
from relay.config import AppConfig
from relay.http_api import HttpApi
from relay.metrics import Metrics
from relay.node import Node
from relay.protocol import errors
from relay.protocol.ids import new_socket_id
from relay.protocol.session import Session
from relay.transport.aiohttp_endpoint import HARD_MESSAGE_LIMIT_FACTOR
from relay.transport.handshake import (
    HEAD_TOO_LARGE,
    MAX_HEAD_SIZE,
    count_refusal,
    may_be_upgrade,
    parse_upgrade,
    refusal,
    switching_protocols,
)
from relay.transport.http_fast import FastHttp, handover
from relay.transport.outbox import Outbox, cut_slow_consumer, write_frames

logger = logging.getLogger(__name__)

# A socket that sends no complete request head within this many seconds is closed (slowloris).
HEAD_TIMEOUT: Final = 30.0
# Frames waiting behind a subscribe that needs cluster state; beyond this, reading pauses.
MAX_QUEUED_FRAMES: Final = 64


class LeanServer:
    """Shared state of every lean connection: one object per listening socket, not per connection."""

    __slots__ = (
        "api",
        "api_prefix",
        "app_path",
        "app_prefix",
        "apps",
        "fast_prefix",
        "http",
        "limit",
        "loop",
        "max_request_size",
        "metrics",
        "node",
        "outbox",
        "tasks",
    )

    def __init__(
        self,
        node: Node,
        http: Callable[[], asyncio.Protocol],
        path: str,
        max_outbound_buffer: int,
        loop: asyncio.AbstractEventLoop,
        api: HttpApi | None = None,
        max_request_size: int = 0,
    ) -> None:
        self.node = node
        self.apps: AppDirectory = node.apps
        self.metrics: Metrics = node.metrics
        self.http = http  # aiohttp's web.Server: each call returns a RequestHandler
        self.app_prefix = f"{path}/app/"
        self.app_path = self.app_prefix.encode()
        self.limit = max_outbound_buffer
        # With `api`, signed publishes are answered by http_fast.FastHttp instead of aiohttp.
        self.api = api
        self.max_request_size = max_request_size
        self.api_prefix = f"{path}/apps/".encode()
        self.fast_prefix = b"POST " + self.api_prefix
        self.loop = loop
        self.outbox = Outbox(loop)
        # Opens, subscribes and disconnects in flight; kept so they are not collected and can be awaited.
        self.tasks: set[asyncio.Task[Any]] = set()

    def __call__(self) -> HeadReader:
        return HeadReader(self)

    def spawn(self, coroutine: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float) -> bool:
        """Wait until every connection is gone and cleaned up (shutdown, after close_connections).

        A closed socket's clean-up starts only when its transport reports connection_lost, after the
        close frame is written: so this waits on the node's connections too, not only on tasks.
        """
        deadline = self.loop.time() + timeout
        while self.node.connections or self.tasks:
            if self.loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class HeadReader(asyncio.Protocol):
    """Reads one request head, then hands the socket to a LeanConnection or to aiohttp."""

    __slots__ = ("_buffer", "_server", "_timer", "_transport")

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._timer = self._server.loop.call_later(HEAD_TIMEOUT, self._transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        transport = self._transport
        assert transport is not None
        if buffer[:1] == b"P" and self._server.api is not None:
            fast = self._server.fast_prefix
            if buffer.startswith(fast) or fast.startswith(buffer):
                self._to_fast_path(transport, buffer)
                return
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            # Hand plain HTTP over as soon as the first bytes rule out an upgrade to /app/.
            prefix = b"GET " + self._server.app_path
            if not (buffer.startswith(prefix) or prefix.startswith(buffer)):
                self._hand_over(transport, buffer)
            elif len(buffer) > MAX_HEAD_SIZE:
                self._too_large(transport)
            else:
                self._buffer = buffer
            return
        if not may_be_upgrade(buffer[:line_end], self._server.app_path):
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
        upgrade = parse_upgrade(buffer[:head_end], self._server.app_prefix)
        if upgrade is None:
            self._hand_over(transport, buffer)
            return
        self._stop_timer()
        self._buffer = b""
        server = self._server
        node = server.node
        app = server.apps.by_key(upgrade.key)
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
        socket_id = new_socket_id()
        session = node.new_session(socket_id, app, server.loop.time())
        connection = LeanConnection(server, socket_id, app, session, transport)
        transport.set_protocol(connection)
        rest = buffer[head_end + 4 :]
        if rest:
            # Frames sent with the request: a pong written now must follow the 101.
            connection.send_wire(accepted)
            connection.start(node.open(connection, upgrade.query), None)
            connection.data_received(rest)
        else:
            connection.start(node.open(connection, upgrade.query), accepted)

    def _hand_over(self, transport: asyncio.Transport, buffer: bytes) -> None:
        """From now on the socket is aiohttp's, as if its own server had accepted it."""
        self._stop_timer()
        self._buffer = b""
        handover(self._server, transport, buffer)

    def _to_fast_path(self, transport: asyncio.Transport, buffer: bytes) -> None:
        """A signed publish, most likely: FastHttp reads it (and hands over to aiohttp if it is not)."""
        self._stop_timer()
        self._buffer = b""
        fast = FastHttp(self._server, transport)
        transport.set_protocol(fast)
        fast.data_received(buffer)

    def _too_large(self, transport: asyncio.Transport) -> None:
        self._stop_timer()
        self._buffer = b""
        transport.write(HEAD_TOO_LARGE)
        transport.close()

    def eof_received(self) -> bool | None:
        return None  # close: a request head cut short gets no answer


def _refuse(transport: asyncio.Transport, accepted: bytes, code: int, message: str) -> None:
    """The 101, the pusher:error and the close frame, in one write."""
    error = wsframe.text_frame(errors.encode_error(code, message))
    transport.write(accepted + error + wsframe.close_frame(code, message))
    transport.close()


class LeanConnection(asyncio.Protocol):
    """node.Connection and WebSocket frame reader on one upgraded transport.

    Frames are handed to the node in arrival order: when one needs cluster state (a subscribe), the
    next ones wait in `_queue` until its coroutine is done. Only then is the coroutine a task.
    """

    __slots__ = (
        "_buffer",
        "_busy",
        "_fragments",
        "_opcode",
        "_pending",
        "_queue",
        "_server",
        "_transport",
        "app",
        "close_code",
        "closed",
        "session",
        "socket_id",
    )

    def __init__(
        self, server: LeanServer, socket_id: str, app: AppConfig, session: Session, transport: asyncio.Transport
    ) -> None:
        self._server = server
        self.socket_id = socket_id
        self.app = app
        self.session = session
        self._transport = transport
        self.closed = False
        self.close_code = wsframe.ABNORMAL_CLOSURE  # until a close frame is sent or received
        self._pending: list[bytes] | None = None  # outbound frames of this loop iteration
        self._buffer: bytearray | None = None  # an incomplete inbound frame
        self._fragments: bytearray | None = None  # a fragmented message so far
        self._opcode = 0  # the opcode of that fragmented message
        self._queue: list[str] | None = None  # messages waiting behind `_busy`
        self._busy: asyncio.Task[Any] | None = None  # the node coroutine this connection waits for

    # node.Connection -----------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        self.send_wire(wsframe.text_frame(frame))

    def send_wire(self, wire: bytes) -> None:
        if self.closed:
            return
        pending = self._pending
        if pending is None:
            self._pending = [wire]
            self._server.outbox.mark(self)
        else:
            pending.append(wire)

    def flush(self) -> None:
        pending = self._pending
        self._pending = None
        if pending is None or self.closed:
            return
        if not write_frames(self._transport, pending, self._server.limit):
            cut_slow_consumer(self._transport, self._server.metrics, self)
            self.closed = True

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.close_code = code
        self._end(wsframe.close_frame(code, reason))

    def abort(self) -> None:
        """Drop the socket without a close handshake (shutdown, for clients that stopped reading)."""
        self.closed = True
        self._transport.abort()

    def _end(self, close_frame: bytes) -> None:
        """Queued frames and the close frame in one write, then close once they are sent."""
        pending = self._pending
        self._pending = None
        self.closed = True
        self._buffer = None
        self._fragments = None
        self._queue = None
        transport = self._transport
        if not transport.is_closing():
            transport.write(close_frame if pending is None else b"".join(pending) + close_frame)
            transport.close()

    # Node calls, in frame order ------------------------------------------------------------------

    def start(self, opening: Coroutine[Any, Any, object], accepted: bytes | None) -> None:
        self._wait_for(self._open(opening, accepted) if accepted is not None else opening)

    async def _open(self, opening: Coroutine[Any, Any, object], accepted: bytes) -> None:
        # Queued from inside the task: connection_established, queued by the open, joins it in one write
        # (queued from data_received, the 101 would often be flushed an iteration before the open runs).
        self.send_wire(accepted)
        await opening

    def _wait_for(self, coroutine: Coroutine[Any, Any, object]) -> None:
        server = self._server
        task = self._busy = server.loop.create_task(coroutine)
        server.tasks.add(task)
        task.add_done_callback(self._resume)  # which also forgets it: one callback per task, not two

    def _resume(self, task: asyncio.Task[Any]) -> None:
        self._server.tasks.discard(task)
        self._busy = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("handling a frame failed for socket_id=%s", self.socket_id, exc_info=task.exception())
        queue = self._queue
        if queue is None:
            return
        paused = len(queue) >= MAX_QUEUED_FRAMES
        while queue and self._busy is None and not self.closed:
            self._dispatch(queue.pop(0))
        if self.closed:
            return
        if not queue:
            self._queue = None
        if paused and len(queue) < MAX_QUEUED_FRAMES:
            self._transport.resume_reading()

    def _receive(self, message: str) -> None:
        if self._busy is not None:
            queue = self._queue
            if queue is None:
                self._queue = [message]
            else:
                queue.append(message)
                if len(queue) == MAX_QUEUED_FRAMES:
                    self._transport.pause_reading()  # back-pressure instead of an unbounded queue
            return
        self._dispatch(message)

    def _dispatch(self, message: str) -> None:
        try:
            pending = self._server.node.receive_nowait(self, message)
        except Exception:
            logger.exception("handling a frame failed for socket_id=%s", self.socket_id)
            return
        if pending is not None:
            self._wait_for(pending)

    async def _disconnect(self, busy: asyncio.Task[Any] | None) -> None:
        if busy is not None:
            # A join still in flight would otherwise add a subscription after the cleanup.
            await asyncio.wait((busy,))
        await self._server.node.disconnect(self)

    # asyncio.Protocol ----------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._buffer = None
        self._fragments = None
        self._queue = None
        self._pending = None
        self._server.spawn(self._disconnect(self._busy))

    def eof_received(self) -> bool | None:
        return None

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer: bytes | bytearray
        if self._buffer is None:
            buffer = data
        else:
            self._buffer += data
            buffer = self._buffer
        limit = self.app.max_message_size * HARD_MESSAGE_LIMIT_FACTOR
        start = 0
        read_frame = wsframe.read_frame
        try:
            while True:
                frame = read_frame(buffer, start, limit)
                if frame is None:
                    break
                fin, opcode, payload, start = frame
                self._frame(fin, opcode, payload, limit)
                if self.closed:
                    return
        except wsframe.FrameError as error:
            self.close(error.code, error.reason)
            return
        if start == len(buffer):
            self._buffer = None
        elif self._buffer is None:
            self._buffer = bytearray(buffer[start:])
        elif start:
            del self._buffer[:start]

    def _frame(self, fin: bool, opcode: int, payload: bytes, limit: int) -> None:
        if opcode >= wsframe.OP_CLOSE:
            if opcode == wsframe.OP_PING:
                self.send_wire(wsframe.pong_frame(payload))
            elif opcode == wsframe.OP_CLOSE:
                self._close_received(payload)
            return
        fragments = self._fragments
        if opcode == wsframe.OP_CONTINUATION:
            if fragments is None:
                raise wsframe.FrameError(wsframe.PROTOCOL_ERROR, "Continuation frame without a message to continue")
            fragments += payload
            if len(fragments) > limit:
                raise wsframe.FrameError(wsframe.MESSAGE_TOO_BIG, f"Message is larger than {limit} bytes")
            if not fin:
                return
            self._fragments = None
            payload = bytes(fragments)
            opcode = self._opcode
        elif fragments is not None:
            raise wsframe.FrameError(wsframe.PROTOCOL_ERROR, "New message before the fragmented one ended")
        elif not fin:
            self._fragments = bytearray(payload)
            self._opcode = opcode
            return
        if opcode == wsframe.OP_BINARY:
            self.send(errors.encode_error(errors.INVALID_MESSAGE_FORMAT, "Binary frames are not supported"))
            return
        try:
            message = payload.decode()
        except UnicodeDecodeError:
            raise wsframe.FrameError(wsframe.INVALID_PAYLOAD, "Invalid UTF-8 in a text message") from None
        self._receive(message)

    def _close_received(self, payload: bytes) -> None:
        """Answer the client's close frame (RFC 6455 §5.5.1) and end the connection."""
        if not payload:
            self.close_code = wsframe.NO_STATUS_RECEIVED
            self._end(wsframe.empty_close_frame())
            return
        code = int.from_bytes(payload[:2], "big")
        if len(payload) < 2 or not wsframe.is_valid_close_code(code):
            raise wsframe.FrameError(wsframe.PROTOCOL_ERROR, "Invalid close code")
        try:
            payload[2:].decode()
        except UnicodeDecodeError:
            raise wsframe.FrameError(wsframe.INVALID_PAYLOAD, "Invalid UTF-8 in the close reason") from None
        self.close(code, "")

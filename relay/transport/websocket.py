"""The lean transport's WebSocket connection: frames read and written on the raw asyncio transport.

A `LeanConnection` is the node's Connection and the frame reader in one small object, made by the
listener once the 101 is decided. Idle cost is the point: no task, future, timer or buffer is held by an
idle connection, and what every connection shares lives once in `WebSocketShared`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final

from relay import wsframe
from relay.config import AppConfig
from relay.eager import run_now
from relay.metrics import Metrics
from relay.node import Node
from relay.protocol import errors
from relay.protocol.session import Session
from relay.transport.limits import HARD_MESSAGE_LIMIT_FACTOR
from relay.transport.outbox import Outbox, cut_slow_consumer, write_frames
from relay.transport.tasks import TaskSet

logger = logging.getLogger(__name__)

# Frames waiting behind a subscribe that needs cluster state; beyond this, reading pauses.
MAX_QUEUED_FRAMES: Final = 64


class WebSocketShared:
    """What every lean WebSocket connection of one listener uses: one object, not one per connection."""

    __slots__ = ("limit", "metrics", "node", "outbox", "tasks")

    def __init__(self, node: Node, max_outbound_buffer: int, tasks: TaskSet) -> None:
        self.node = node
        self.metrics: Metrics = node.metrics
        self.limit = max_outbound_buffer
        self.outbox = Outbox(tasks.loop)
        self.tasks = tasks


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
        "_shared",
        "_transport",
        "app",
        "close_code",
        "closed",
        "session",
        "socket_id",
    )

    def __init__(
        self, shared: WebSocketShared, socket_id: str, app: AppConfig, session: Session, transport: asyncio.Transport
    ) -> None:
        self._shared = shared
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
            self._shared.outbox.mark(self)
        else:
            pending.append(wire)

    def flush(self) -> None:
        pending = self._pending
        self._pending = None
        if pending is None or self.closed:
            return
        if not write_frames(self._transport, pending, self._shared.limit):
            cut_slow_consumer(self._transport, self._shared.metrics, self)
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

    def start(self, query: str, accepted: bytes, frames_follow: bool) -> None:
        """Send the 101 and open the connection at the node (greeting it, or refusing it)."""
        node = self._shared.node
        opening = node.open(self, query)
        if node.opens_now(self.app, query):
            # No task (relay.eager): the greeting is queued right behind the 101, for the same write.
            self.send_wire(accepted)
            self._run_now(opening)
        elif frames_follow:
            # Frames sent with the request: a pong written now must follow the 101.
            self.send_wire(accepted)
            self._wait_for(opening)
        else:
            self._wait_for(self._open(opening, accepted))

    def _run_now(self, coroutine: Coroutine[Any, Any, object]) -> None:
        try:
            pending = run_now(coroutine)
        except Exception:
            logger.exception("opening socket_id=%s failed", self.socket_id)
            return
        if pending is not None:
            self._wait_for(pending)

    async def _open(self, opening: Coroutine[Any, Any, object], accepted: bytes) -> None:
        # Queued from inside the task: connection_established, queued by the open, joins it in one write
        # (queued from data_received, the 101 would often be flushed an iteration before the open runs).
        self.send_wire(accepted)
        await opening

    def _wait_for(self, coroutine: Coroutine[Any, Any, object]) -> None:
        self._busy = self._shared.tasks.start(coroutine, self._resume)

    def _resume(self, task: asyncio.Task[Any]) -> None:
        self._shared.tasks.forget(task)
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
            pending = self._shared.node.receive_nowait(self, message)
        except Exception:
            logger.exception("handling a frame failed for socket_id=%s", self.socket_id)
            return
        if pending is not None:
            self._wait_for(pending)

    async def _disconnect(self, busy: asyncio.Task[Any] | None) -> None:
        if busy is not None:
            # A join still in flight would otherwise add a subscription after the cleanup.
            await asyncio.wait((busy,))
        await self._shared.node.disconnect(self)

    # asyncio.Protocol ----------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._buffer = None
        self._fragments = None
        self._queue = None
        self._pending = None
        busy = self._busy
        if busy is None and self._shared.node.synchronous:
            try:
                pending = run_now(self._shared.node.disconnect(self))
            except Exception:
                logger.exception("disconnecting socket_id=%s failed", self.socket_id)
                return
            if pending is not None:
                self._shared.tasks.spawn(pending)
            return
        self._shared.tasks.spawn(self._disconnect(busy))

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

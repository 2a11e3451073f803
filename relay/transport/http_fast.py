"""The lean transport's fast path for `POST {path}/apps/<id>/events` and `/batch_events`.

aiohttp's request and response machinery was two thirds of a publish's CPU. A plain keep-alive HTTP/1.1
publish with a Content-Length is parsed (relay.transport.http_head, llhttp) and answered here instead,
through HttpApi.publish_request (the same checks, errors and publish as the aiohttp handlers), in a task
as an aiohttp handler runs, so asyncio.timeout() and cancellation work there as they do in aiohttp. With
an adapter that completes synchronously (in-memory) nothing there can suspend or time out, so the publish
runs on the spot instead (relay.eager) and its answer is written by a plain callback; should it suspend
after all, the rest still runs in a task.
Anything else (another route, chunked bodies, Expect, HTTP/1.0, a head llhttp refuses) hands the
connection with its buffered bytes to aiohttp for good.

Requests on one connection are answered in order: the next head is not parsed before the previous
response is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, Final

from relay.eager import Finished, start_eagerly
from relay.http_api import HttpApi, PublishAnswer
from relay.node import Node
from relay.transport.http_head import MAX_FAST_HEAD, HeadError, HeadParser, PublishHead
from relay.transport.tasks import TaskSet

logger = logging.getLogger(__name__)

# aiohttp's own keep-alive timeout: an idle (or trickling) connection is closed after this many seconds.
KEEPALIVE_TIMEOUT: Final = 75.0
# Bytes buffered while a publish is in flight before reading pauses (pipelining clients).
MAX_PENDING_INPUT: Final = 1 << 16
REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}
TOO_LARGE_BODY: Final = b'{"error":"Request body is too large"}'
INTERNAL_ERROR_BODY: Final = b'{"error":"Internal server error"}'
# A refused body is read and dropped up to this many bytes, for at most this many seconds, before closing.
MAX_DISCARD: Final = 64 << 20
DISCARD_TIMEOUT: Final = 10.0
_OK_EMPTY: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

# Gives a socket, with the bytes read from it so far, to aiohttp (relay.transport.handover).
HandOver = Callable[[asyncio.Transport, bytes], None]


def response(status: int, body: bytes, close: bool, retry_after: int | None = None) -> bytes:
    """The whole response; `retry_after` (seconds) becomes a Retry-After header, as on a 429."""
    if status == 200 and body == b"{}" and not close:
        return _OK_EMPTY
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        REASONS.get(status, b""),
        len(body),
    )
    if retry_after is not None:
        head += b"Retry-After: %d\r\n" % retry_after
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


class FastPath:
    """What every fast-path connection of one listener uses."""

    __slots__ = ("api", "api_prefix", "hand_over", "max_request_size", "node", "prefix", "synchronous", "tasks")

    def __init__(
        self, api: HttpApi, node: Node, path: str, max_request_size: int, tasks: TaskSet, hand_over: HandOver
    ) -> None:
        self.api = api
        self.node = node
        self.api_prefix = f"{path}/apps/".encode()
        self.prefix = b"POST " + self.api_prefix  # what a fast-path request starts with
        self.max_request_size = max_request_size
        self.tasks = tasks
        self.hand_over = hand_over
        # The in-memory adapter: a publish never suspends, so it runs on the spot, not in a task (relay.eager).
        self.synchronous = node.synchronous

    def may_serve(self, buffer: bytes) -> bool:
        """Whether `buffer`, the start of a request, may still be a publish."""
        prefix = self.prefix
        return buffer.startswith(prefix) or prefix.startswith(buffer)


class FastHttp(asyncio.Protocol):
    """One keep-alive HTTP connection while its requests are publishes; aiohttp's from the first other one."""

    __slots__ = (
        "_buffer",
        "_busy",
        "_close",
        "_closed",
        "_eof",
        "_fed",
        "_head",
        "_idle_since",
        "_parser",
        "_paused",
        "_shared",
        "_timer",
        "_transport",
    )

    def __init__(self, shared: FastPath, transport: asyncio.Transport) -> None:
        self._shared = shared
        self._transport = transport
        self._parser = HeadParser(shared.api_prefix)
        self._buffer = b""  # input from the start of the request being read
        self._fed = 0  # how much of `_buffer` the parser has seen
        self._head: PublishHead | None = None  # a parsed head whose body is still arriving
        # The publish being answered: its task, or the call that writes its answer.
        self._busy: asyncio.Task[None] | asyncio.Handle | None = None
        self._close = False  # the answer in flight ends the connection
        self._closed = False
        self._eof = False  # the client half-closed while an answer was in flight
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None  # loop time since when the connection waits for a request

    # asyncio.Protocol ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if self._busy is None:
            self._process()
        elif len(self._buffer) > MAX_PENDING_INPUT and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._buffer = b""
        self._stop_timer()

    def eof_received(self) -> bool | None:
        # Half-closed after its last request: keep the socket open until that answer is written.
        if self._busy is None:
            return None
        self._eof = True
        return True

    def pause_writing(self) -> None:
        # A client that pipelines without reading answers: stop reading its requests until it catches up.
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        if not self._paused:
            self._transport.resume_reading()

    # Requests ------------------------------------------------------------------------------------

    def _process(self) -> None:
        shared = self._shared
        while self._busy is None and not self._closed:
            buffer = self._buffer
            head = self._head
            if head is None:
                head = self._read_head(buffer)
                if head is None:
                    return
                if head.length > shared.max_request_size:
                    endpoint = "batch_events" if head.batch else "events"
                    shared.api.count_request(head.app_id, endpoint, 413, time.perf_counter())
                    self._refuse_body(head.length)
                    return
                buffer = self._buffer
            if len(buffer) < head.length:
                self._wait()
                return
            self._head = None
            body = buffer[: head.length]
            self._buffer = buffer[head.length :]
            self._fed = 0
            try:
                self._parser.body(body)
            except HeadError:
                self._hand_over()
                return
            self._idle_since = None  # a whole request: the keep-alive clock starts again at the next wait
            self._answer(head, body)

    def _read_head(self, buffer: bytes) -> PublishHead | None:
        """The head at the start of `buffer` once it is complete, parsed and a publish; None meanwhile."""
        if not buffer:
            self._wait()
            return None
        if not self._shared.may_serve(buffer):
            self._hand_over()
            return None
        head_end = buffer.find(b"\r\n\r\n")
        complete = head_end >= 0
        end = head_end + 4 if complete else len(buffer)
        if end > MAX_FAST_HEAD + 4:
            self._hand_over()  # aiohttp answers it as it would have
            return None
        try:
            self._parser.feed(buffer[self._fed : end])
        except HeadError:
            self._hand_over()  # aiohttp's 400, from the same parser
            return None
        self._fed = end
        if not complete:
            self._wait()
            return None
        head = self._parser.head(buffer[:head_end])
        if head is None:
            self._hand_over()
            return None
        self._head = head
        self._buffer = buffer[end:]
        self._fed = 0
        return head

    def _answer(self, head: PublishHead, body: bytes) -> None:
        # Shutting down: no more requests on this connection, as aiohttp closes its keep-alive ones.
        self._close = head.close or not self._shared.node.accepting
        shared = self._shared
        publishing = self._publish(head, body)
        if shared.synchronous:
            started = start_eagerly(publishing)
            if isinstance(started, Finished):
                # Written next iteration, with the other connections' answers, as from a task, for less.
                self._busy = shared.tasks.loop.call_soon(self._answered, started.value)
                return
            self._busy = shared.tasks.start(self._answer_later(started), self._published)
            return
        # In a task, as aiohttp runs its handlers: asyncio.timeout() and cancellation work in the publish.
        self._busy = shared.tasks.start(self._answer_later(publishing), self._published)

    async def _publish(self, head: PublishHead, body: bytes) -> PublishAnswer:
        try:
            return await self._shared.api.publish_request(
                "POST", head.target, head.query, head.app_id, body, batch=head.batch
            )
        except Exception:
            logger.exception("answering an HTTP publish failed")
            self._close = True
            return 500, INTERNAL_ERROR_BODY, None

    async def _answer_later(self, publishing: Coroutine[Any, Any, PublishAnswer]) -> None:
        """The publish and its answer, then the next request if one is in: all from the task."""
        self._answered(await publishing)

    def _answered(self, answer: PublishAnswer) -> None:
        self._busy = None
        if self._closed:
            return
        self._respond(*answer)
        self._process()

    def _respond(self, status: int, answer: bytes, retry_after: int | None) -> None:
        close = self._close or self._eof
        self._write(response(status, answer, close, retry_after), close)
        if self._paused:
            self._paused = False
            self._transport.resume_reading()

    def _published(self, task: asyncio.Task[None]) -> None:
        self._shared.tasks.forget(task)
        if task.cancelled() and self._busy is task:
            self._busy = None
            self._write(response(500, INTERNAL_ERROR_BODY, True), True)

    def _refuse_body(self, length: int) -> None:
        """413 at once, then read and drop the body the client is still sending, and only then close:
        closing with unread input makes the kernel reset the connection, and the client would see
        ECONNRESET instead of the answer (the official SDKs then report "request failed")."""
        self._transport.write(response(413, TOO_LARGE_BODY, True))
        self._closed = True
        self._stop_timer()
        remaining = min(length, MAX_DISCARD) - len(self._buffer)
        self._buffer = b""
        if remaining <= 0:
            self._transport.close()
            return
        self._transport.set_protocol(Discard(self._transport, remaining, self._shared.tasks.loop))

    def _write(self, wire: bytes, close: bool) -> None:
        transport = self._transport
        if transport.is_closing():
            self._closed = True
            return
        transport.write(wire)
        if close:
            self._closed = True
            self._buffer = b""
            self._stop_timer()
            transport.close()

    # Connection ----------------------------------------------------------------------------------

    def _wait(self) -> None:
        """Waiting for input: idle or partial, the connection closes after KEEPALIVE_TIMEOUT without a request.

        One timer per connection, not one per request: it is left running across requests and, when it
        fires early, armed again for the rest of the current wait."""
        loop = self._shared.tasks.loop
        if self._idle_since is None:
            self._idle_since = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(KEEPALIVE_TIMEOUT, self._idle)

    def _idle(self) -> None:
        self._timer = None
        since = self._idle_since
        if since is None:
            return  # busy; the next wait arms a timer again
        loop = self._shared.tasks.loop
        remaining = since + KEEPALIVE_TIMEOUT - loop.time()
        if remaining > 0:
            self._timer = loop.call_later(remaining, self._idle)
            return
        self._closed = True
        self._transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self) -> None:
        """From now on the socket is aiohttp's, with what it sent after the last answered request."""
        self._stop_timer()
        self._closed = True
        buffer = self._buffer
        self._buffer = b""
        self._shared.hand_over(self._transport, buffer)


class Discard(asyncio.Protocol):
    """Reads and drops the rest of a refused request body, then closes; bounded in bytes and time."""

    __slots__ = ("_remaining", "_timer", "_transport")

    def __init__(self, transport: asyncio.Transport, remaining: int, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._remaining = remaining
        self._timer = loop.call_later(DISCARD_TIMEOUT, transport.close)
        if transport.is_reading() is False:
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._remaining -= len(data)
        if self._remaining <= 0:
            self._timer.cancel()
            self._transport.close()

    def eof_received(self) -> bool | None:
        self._timer.cancel()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()

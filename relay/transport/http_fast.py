"""The lean transport's fast path for `POST {path}/apps/<id>/events` and `/batch_events`.

aiohttp's request and response machinery was two thirds of a publish's CPU. A plain keep-alive HTTP/1.1
publish with a Content-Length is parsed and answered here instead, through HttpApi.publish_request (the
same checks, errors and publish as the aiohttp handlers). Anything else (another route, chunked bodies,
Expect, HTTP/1.0, odd headers) hands the connection with its buffered bytes to aiohttp for good.

Requests on one connection are answered in order: the next head is not parsed before the previous
response is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast

from relay.transport.handshake import MAX_HEAD_SIZE

if TYPE_CHECKING:
    from relay.transport.lean import LeanServer

logger = logging.getLogger(__name__)

# aiohttp's own keep-alive timeout: an idle (or trickling) connection is closed after this many seconds.
KEEPALIVE_TIMEOUT: Final = 75.0
# Bytes buffered while a publish is in flight before reading pauses (pipelining clients).
MAX_PENDING_INPUT: Final = 1 << 16
REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}
TOO_LARGE_BODY: Final = b'{"error":"Request body is too large"}'
INTERNAL_ERROR_BODY: Final = b'{"error":"Internal server error"}'
_OK_EMPTY: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
# Headers this path does not implement: the request goes to aiohttp, which does.
_UNSUPPORTED_HEADERS: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})


@dataclass(frozen=True, slots=True)
class PublishHead:
    """A request head the fast path answers."""

    target: str  # the raw request target, query included
    query: str
    app_id: str
    batch: bool
    length: int
    close: bool  # the client sent `Connection: close`


def parse_publish_head(head: bytes, api_prefix: bytes) -> PublishHead | None:
    """The publish request in a complete head (without its final blank line), or None: aiohttp's then.

    `api_prefix` is `{config.path}/apps/`. Percent-encoded paths go to aiohttp, which decodes them.
    """
    request_line, _, block = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    target = parts[1]
    path = target.partition(b"?")[0]
    if not path.startswith(api_prefix) or b"%" in path or b"#" in target:
        return None
    app_id, slash, endpoint = path[len(api_prefix) :].partition(b"/")
    if not slash or not app_id or b"{" in app_id or b"}" in app_id:
        return None
    if endpoint == b"events":
        batch = False
    elif endpoint == b"batch_events":
        batch = True
    else:
        return None
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.isprintable():
        return None
    length: int | None = None
    close = False
    for line in block.split(b"\r\n") if block else ():
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            return None  # obs-fold or a malformed field: aiohttp's 400
        name = name.lower()
        if name == b"content-length":
            value = value.strip()
            if length is not None or not value.isdigit() or len(value) > 18:
                return None
            length = int(value)
        elif name in _UNSUPPORTED_HEADERS:
            return None
        elif name == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
    if length is None:
        return None
    return PublishHead(text, text.partition("?")[2], app_id.decode(), batch, length, close)


def response(status: int, body: bytes, close: bool) -> bytes:
    if status == 200 and body == b"{}" and not close:
        return _OK_EMPTY
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        REASONS.get(status, b""),
        len(body),
    )
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


class _Resumed:
    """Continues, inside a task, a coroutine that was started by hand and suspended (its first yield).

    Most publishes finish without suspending: those cost no task at all.
    """

    __slots__ = ("_coroutine", "_yielded")

    def __init__(self, coroutine: Coroutine[Any, Any, tuple[int, bytes]], yielded: object) -> None:
        self._coroutine = coroutine
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, tuple[int, bytes]]:
        coroutine = self._coroutine
        value = self._yielded
        while True:
            try:
                sent = yield value
            except BaseException as error:  # cancellation goes on to the coroutine
                try:
                    value = coroutine.throw(error)
                except StopIteration as done:
                    return cast(tuple[int, bytes], done.value)
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration as done:
                    return cast(tuple[int, bytes], done.value)


async def _finish(resumed: _Resumed) -> tuple[int, bytes]:
    return await resumed


class FastHttp(asyncio.Protocol):
    """One keep-alive HTTP connection while its requests are publishes; aiohttp's from the first other one."""

    __slots__ = ("_buffer", "_busy", "_closed", "_eof", "_head", "_paused", "_server", "_timer", "_transport")

    def __init__(self, server: LeanServer, transport: asyncio.Transport) -> None:
        self._server = server
        self._transport = transport
        self._buffer = b""
        self._head: PublishHead | None = None  # a parsed head whose body is still arriving
        self._busy: asyncio.Task[tuple[int, bytes]] | None = None
        self._closed = False
        self._eof = False  # the client half-closed while an answer was in flight
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None

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
        server = self._server
        while self._busy is None and not self._closed:
            buffer = self._buffer
            head = self._head
            if head is None:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    prefix = server.fast_prefix
                    if buffer and not buffer.startswith(prefix) and not prefix.startswith(buffer):
                        self._hand_over()
                    elif len(buffer) > MAX_HEAD_SIZE:
                        self._hand_over()  # aiohttp refuses it as it would have
                    else:
                        self._wait()
                    return
                head = parse_publish_head(buffer[:head_end], server.api_prefix)
                if head is None:
                    self._hand_over()
                    return
                if head.length > server.max_request_size:
                    if server.api is not None:
                        endpoint = "batch_events" if head.batch else "events"
                        server.api.count_request(head.app_id, endpoint, 413, time.perf_counter())
                    self._write(response(413, TOO_LARGE_BODY, True), True)
                    return
                buffer = self._buffer = buffer[head_end + 4 :]
                self._head = head
            if len(buffer) < head.length:
                self._wait()
                return
            self._head = None
            body = buffer[: head.length]
            self._buffer = buffer[head.length :]
            self._stop_timer()
            self._answer(head, body)

    def _answer(self, head: PublishHead, body: bytes) -> None:
        server = self._server
        assert server.api is not None
        # Shutting down: no more requests on this connection, as aiohttp closes its keep-alive ones.
        close = head.close or not server.node.accepting
        coroutine = server.api.publish_request("POST", head.target, head.query, head.app_id, body, batch=head.batch)
        try:
            yielded = coroutine.send(None)
        except StopIteration as done:
            status, answer = done.value
            self._write(response(status, answer, close), close)
            return
        except Exception:
            logger.exception("answering an HTTP publish failed")
            self._write(response(500, INTERNAL_ERROR_BODY, True), True)
            return
        task = self._busy = server.spawn(_finish(_Resumed(coroutine, yielded)))
        task.add_done_callback(lambda done: self._answered(done, close))

    def _answered(self, task: asyncio.Task[tuple[int, bytes]], close: bool) -> None:
        self._busy = None
        if self._closed:
            return
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                logger.error("answering an HTTP publish failed", exc_info=task.exception())
            self._write(response(500, INTERNAL_ERROR_BODY, True), True)
            return
        status, answer = task.result()
        close = close or self._eof
        self._write(response(status, answer, close), close)
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        self._process()

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
        """Waiting for input: idle or partial, the connection closes after KEEPALIVE_TIMEOUT without a request."""
        if self._timer is None:
            self._timer = self._server.loop.call_later(KEEPALIVE_TIMEOUT, self._idle)

    def _idle(self) -> None:
        self._timer = None
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
        handover(self._server, self._transport, buffer)


def handover(server: LeanServer, transport: asyncio.Transport, buffer: bytes) -> None:
    handler = server.http()
    transport.set_protocol(handler)
    handler.connection_made(transport)
    if buffer:
        handler.data_received(buffer)

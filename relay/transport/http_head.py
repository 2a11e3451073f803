"""Request heads of the HTTP fast path, parsed by llhttp (httptools), the parser aiohttp's C code uses.

The fast path answers only heads llhttp accepts in its strict mode and that stay well inside aiohttp's
own limits (8190-byte lines and fields, 128 headers); every other head, malformed or merely unusual,
goes to aiohttp, whose answer is then the answer. So both parsers on one port give a request the same
verdict, which tests/transport/test_head_parsing_differential.py checks on hostile heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import httptools

# Heads larger than this, or with more headers, are aiohttp's: far below its own limits, far above a publish.
MAX_FAST_HEAD: Final = 4096
MAX_FAST_HEADERS: Final = 64
# Headers this path does not implement (a compressed body, an old WebSocket handshake): aiohttp does.
_UNSUPPORTED_HEADERS: Final = frozenset(
    {b"transfer-encoding", b"expect", b"upgrade", b"content-encoding", b"sec-websocket-key1"}
)


@dataclass(frozen=True, slots=True)
class PublishHead:
    """A request head the fast path answers."""

    target: str  # the raw request target, query included
    query: str
    app_id: str
    batch: bool
    length: int
    close: bool  # the client sent `Connection: close`


class HeadError(Exception):
    """llhttp refused the bytes (or saw an upgrade): aiohttp answers them."""


class HeadParser:
    """One keep-alive connection's request heads, one after another, through one llhttp parser.

    feed() the head's bytes as they arrive (an error shows as soon as llhttp sees it), then head() once
    the blank line is in, then body() with exactly the body's bytes so the parser is ready for the next.
    """

    __slots__ = ("_complete", "_host", "_length", "_names", "_parser", "_unsupported", "api_prefix")

    def __init__(self, api_prefix: bytes) -> None:
        self.api_prefix = api_prefix  # `{config.path}/apps/`
        self._parser = httptools.HttpRequestParser(self)
        self._complete = False
        self._length: int | None = None
        self._host = False
        self._names: set[bytes] = set()  # lower-case header names of this head
        self._unsupported = False

    # llhttp callbacks ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        names = self._names
        if name in names:
            # aiohttp refuses a second Host, Content-Type, User-Agent... and may refuse more one day.
            self._unsupported = True
        names.add(name)
        if name == b"host":
            self._host = True
        elif name == b"content-length":
            value = value.strip()  # llhttp has checked the digits and refused a second Content-Length
            if len(value) > 18 or not value.isdigit():
                self._unsupported = True
            else:
                self._length = int(value)
        elif name in _UNSUPPORTED_HEADERS:
            self._unsupported = True
        elif name == b"connection" and b"upgrade" in value.lower():
            self._unsupported = True

    def on_headers_complete(self) -> None:
        self._complete = True

    # The connection's side -----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            raise HeadError(str(error)) from None  # an upgrade too is aiohttp's

    def head(self, head: bytes) -> PublishHead | None:
        """The publish in `head` (its bytes up to the blank line, all fed already), or None: aiohttp's then."""
        parser = self._parser
        if (
            not self._complete
            or self._unsupported
            or self._length is None
            or not self._host  # aiohttp's 400 for HTTP/1.1
            or len(self._names) > MAX_FAST_HEADERS
            or len(head) > MAX_FAST_HEAD
            or parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
        ):
            return None
        parts = head[: head.find(b"\r\n")].split(b" ")
        if len(parts) != 3:
            return None
        target = parts[1]
        path = target.partition(b"?")[0]
        api_prefix = self.api_prefix
        # Percent-encoded paths go to aiohttp, which decodes them.
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
        close = not parser.should_keep_alive()
        return PublishHead(text, text.partition("?")[2], app_id.decode(), batch, self._length, close)

    def body(self, body: bytes) -> None:
        """The answered request's body: the parser moves past it, ready for the next head."""
        if body:
            self.feed(body)
        self._complete = False
        self._length = None
        self._host = False
        self._names.clear()
        self._unsupported = False

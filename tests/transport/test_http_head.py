"""HeadParser (relay/transport/http_head.py): which heads the fast path answers, byte by byte and in sequence."""

from __future__ import annotations

import pytest

from relay.transport.http_head import MAX_FAST_HEAD, HeadError, HeadParser, PublishHead

PREFIX = b"/apps/"
TARGET = b"/apps/1001/events?auth_key=k&body_md5=x"
HEAD = b"POST " + TARGET + b" HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 2"


def parse(head: bytes, chunk: int = 0) -> PublishHead | None:
    """Feed `head` and its blank line, whole or `chunk` bytes at a time, and return the parser's verdict."""
    parser = HeadParser(PREFIX)
    wire = head + b"\r\n\r\n"
    step = chunk or len(wire)
    for at in range(0, len(wire), step):
        parser.feed(wire[at : at + step])
    return parser.head(head)


def test_a_plain_publish() -> None:
    head = parse(HEAD)
    assert head == PublishHead(
        target=TARGET.decode(),
        query="auth_key=k&body_md5=x",
        app_id="1001",
        batch=False,
        length=2,
        close=False,
    )


@pytest.mark.parametrize("chunk", [1, 2, 7, 64])
def test_fed_in_pieces(chunk: int) -> None:
    assert parse(HEAD, chunk) == parse(HEAD)


def test_batch_events_and_connection_close() -> None:
    head = parse(HEAD.replace(b"/events", b"/batch_events") + b"\r\nConnection: close")
    assert head is not None
    assert (head.batch, head.close) == (True, True)


@pytest.mark.parametrize(
    "head",
    [
        HEAD.replace(b"Host: relay\r\n", b"Host: relay\nTransfer-Encoding: chunked\r\n"),
        HEAD + b"\r\nX-A: a\x00b",
        HEAD + b"\r\nX A: b",
        HEAD + b"\r\nX-A: a\r\n b",  # obs-fold
        HEAD + b"\r\nContent-Length: 3",
        HEAD + b"\r\nTransfer-Encoding: chunked",
        HEAD.replace(b"Content-Length: 2", b"Content-Length: -2"),
        HEAD.replace(b" HTTP/1.1", b" HTTP/1.1 "),
    ],
    ids=["bare LF", "NUL", "space in name", "obs-fold", "two lengths", "length and chunked", "negative", "3 spaces"],
)
def test_llhttp_refuses_what_aiohttp_refuses(head: bytes) -> None:
    with pytest.raises(HeadError):
        parse(head)


@pytest.mark.parametrize(
    "head",
    [
        HEAD.replace(b"POST ", b"PUT "),
        HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"),
        HEAD.replace(b"/events", b"/channels"),
        HEAD.replace(b"/apps/1001/events", b"/apps/1001/even%74s"),
        HEAD.replace(b"/apps/1001/events", b"/apps//events"),
        HEAD.replace(b"Content-Length: 2", b"X-Length: 2"),
        HEAD.replace(b"Host: relay\r\n", b""),
        HEAD + b"\r\nHost: other",
        HEAD + b"\r\nUser-Agent: a\r\nUser-Agent: b",
        HEAD + b"\r\nExpect: 100-continue",
        HEAD + b"\r\nContent-Encoding: gzip",
        HEAD + b"\r\nX-A: " + b"a" * MAX_FAST_HEAD,
        HEAD + b"".join(b"\r\nX-%d: a" % number for number in range(70)),
    ],
    ids=[
        "PUT",
        "HTTP/1.0",
        "another route",
        "percent-encoded",
        "no app id",
        "no length",
        "no host",
        "two hosts",
        "a repeated header",
        "expect",
        "compressed",
        "large",
        "many headers",
    ],
)
def test_heads_left_to_aiohttp(head: bytes) -> None:
    assert parse(head) is None


def test_one_parser_reads_request_after_request() -> None:
    parser = HeadParser(PREFIX)
    for number in range(3):
        head = HEAD.replace(b"1001", b"%d" % number)
        parser.feed(head + b"\r\n\r\n")
        publish = parser.head(head)
        assert publish is not None
        assert publish.app_id == str(number)
        parser.body(b"{}")


def test_a_bad_byte_after_a_body_is_refused() -> None:
    parser = HeadParser(PREFIX)
    parser.feed(HEAD + b"\r\n\r\n")
    assert parser.head(HEAD) is not None
    parser.body(b"{}")
    with pytest.raises(HeadError):
        parser.feed(b"\x00POST")

"""The lean transport's fast path and aiohttp give every request head the same verdict.

Two parsers on one port must agree on where a request starts and ends, or a request can be smuggled
past one of them. Each head below, hostile or generated, goes over a real socket to a lean server (its
fast path sees every `POST /apps/...`) and to an aiohttp-transport server. The status codes of every
answer, in order, and whether the server closed the connection must be the same on both.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pusher
import pytest
from aiohttp._http_parser import HttpRequestParser
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError

from relay.server import Server
from tests.support.inprocess import APP, server_config, start_in_process
from tests.support.timeouts import scaled
from tests.transport.test_lean_http_fast_path import EVENTS, event, raw_request

Verdict = tuple[int, ...] | str  # the answers' status codes, then -1 if the server closed
Mutation = Callable[[bytes], bytes]


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    lean = await start_in_process(server_config(transport="lean"))
    reference = await start_in_process(server_config(transport="aiohttp"))
    try:
        yield lean.running, reference.running
    finally:
        await lean.stop()
        await reference.stop()


@pytest.fixture
def sdk() -> Any:
    return pusher.Pusher(app_id=APP.id, key=APP.key, secret=APP.secret, host="127.0.0.1")


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    length = next(int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head + await asyncio.wait_for(reader.readexactly(length), scaled(5))


async def verdict(port: int, wire: bytes, first: bytes = b"") -> Verdict:
    """The status codes of every answer to `wire` (sent after `first` is answered), then -1 if the server
    closed; or how the socket failed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if first:
            writer.write(first)
            answer = await read_answer(reader)
        writer.write(wire)
        rest = await answers(reader)
    except ConnectionResetError:
        return "reset"
    finally:
        writer.close()
    return (200, *rest) if first and answer.startswith(b"HTTP/1.1 200 ") else rest


async def answers(reader: asyncio.StreamReader) -> tuple[int, ...]:
    """The status codes of the answers read until the server closes (then -1) or stays quiet for a second
    (a keep-alive connection after its answers, or a head that is still incomplete)."""
    received = b""
    closed = False
    try:
        while chunk := await asyncio.wait_for(reader.read(1 << 16), scaled(1)):
            received += chunk
        closed = True
    except TimeoutError:
        pass
    # aiohttp answers a request it cannot parse with HTTP/1.0.
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d\d\d) ", received)]
    return (*statuses, -1) if closed else tuple(statuses)


async def compare(servers: tuple[Server, Server], wires: dict[str, bytes], first: bytes = b"") -> dict[str, Verdict]:
    """Each wire on both servers at once; the verdicts of the lean server, after checking they agree."""
    lean, reference = servers
    names = list(wires)
    got = await asyncio.gather(*(verdict(lean.port, wires[name], first) for name in names))
    expected = await asyncio.gather(*(verdict(reference.port, wires[name], first) for name in names))
    differ = {name: (g, e) for name, g, e in zip(names, got, expected, strict=True) if g != e}
    assert not differ, f"lean vs aiohttp verdicts differ: {differ}"
    return dict(zip(names, got, strict=True))


def on_head(mutate: Mutation) -> Callable[[bytes], bytes]:
    """Apply `mutate` to the head of a request (its lines, without the blank line) and keep its body."""

    def apply(wire: bytes) -> bytes:
        head, _, body = wire.partition(b"\r\n\r\n")
        return mutate(head) + b"\r\n\r\n" + body

    return apply


def add(line: bytes) -> Mutation:
    return on_head(lambda head: head + b"\r\n" + line)


def replace(old: bytes, new: bytes) -> Mutation:
    return on_head(lambda head: head.replace(old, new, 1))


def length_of(wire: bytes) -> bytes:
    return str(len(wire.partition(b"\r\n\r\n")[2])).encode()


HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda wire: wire,
    "bare LF before Transfer-Encoding": on_head(lambda head: head + b"\nTransfer-Encoding: chunked"),
    "bare LF line ends": on_head(lambda head: head.replace(b"\r\n", b"\n")),
    "bare CR in a value": add(b"X-A: a\rb"),
    "obs-fold": add(b"X-A: a\r\n  b"),
    "obs-fold of Content-Length": on_head(lambda head: head.replace(b"Content-Length:", b"Content-Length:\r\n ")),
    "duplicate Content-Length, same": lambda wire: add(b"Content-Length: " + length_of(wire))(wire),
    "duplicate Content-Length, other": add(b"Content-Length: 0"),
    "Content-Length list": lambda wire: replace(b"Content-Length: ", b"Content-Length: " + length_of(wire) + b", ")(
        wire
    ),
    "Content-Length and Transfer-Encoding": add(b"Transfer-Encoding: chunked"),
    "Transfer-Encoding identity": add(b"Transfer-Encoding: identity"),
    "Content-Length plus sign": replace(b"Content-Length: ", b"Content-Length: +"),
    "Content-Length leading zeros": replace(b"Content-Length: ", b"Content-Length: 000"),
    "Content-Length hex": replace(b"Content-Length: ", b"Content-Length: 0x"),
    "Content-Length negative": replace(b"Content-Length: ", b"Content-Length: -"),
    "Content-Length trailing space": on_head(lambda head: head + b" "),
    "Content-Length huge": replace(b"Content-Length: ", b"Content-Length: 99999999999999999999"),
    "NUL in a value": add(b"X-A: a\x00b"),
    "DEL in a value": add(b"X-A: a\x7fb"),
    "obs-text in a value": add(b"X-A: caf\xc3\xa9"),
    "space in a header name": add(b"X A: b"),
    "space before the colon": replace(b"Content-Length:", b"Content-Length :"),
    "tab in a header name": add(b"X\tA: b"),
    "empty header name": add(b": b"),
    "no colon": add(b"X-A b"),
    "value without space": replace(b"Content-Length: ", b"Content-Length:"),
    "huge value, inside aiohttp's limit": add(b"X-A: " + b"a" * 5000),
    "huge value, over aiohttp's limit": add(b"X-A: " + b"a" * 9000),
    "huge name": add(b"X-" + b"a" * 9000 + b": b"),
    "200 headers": add(b"\r\n".join(b"X-%d: a" % i for i in range(200))),
    "100 headers": add(b"\r\n".join(b"X-%d: a" % i for i in range(100))),
    "HTTP/1.0": replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n"),
    "HTTP/1.2": replace(b" HTTP/1.1\r\n", b" HTTP/1.2\r\n"),
    "HTTP/2.0": replace(b" HTTP/1.1\r\n", b" HTTP/2.0\r\n"),
    "lower-case version": replace(b" HTTP/1.1\r\n", b" http/1.1\r\n"),
    "two spaces in the request line": replace(b" HTTP/1.1\r\n", b"  HTTP/1.1\r\n"),
    "tab in the request line": replace(b" HTTP/1.1\r\n", b"\tHTTP/1.1\r\n"),
    "fragment in the target": replace(b"?", b"#x?"),
    "NUL in the target": replace(b"?", b"\x00?"),
    "high byte in the target": replace(b"?", b"\xff?"),
    "percent-encoded path": replace(b"/events?", b"/even%74s?"),
    "Connection: close": add(b"Connection: close"),
    "Connection: upgrade": add(b"Connection: upgrade\r\nUpgrade: websocket"),
    "Expect: 100-continue": add(b"Expect: 100-continue"),
    "no Host": on_head(lambda head: b"\r\n".join(line for line in head.split(b"\r\n") if line[:5] != b"Host:")),
    "two Hosts": add(b"Host: other"),
    "leading blank line": lambda wire: b"\r\n" + wire,
    "pipelined smuggle via bare LF": on_head(
        lambda head: head + b"\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /up HTTP/1.1\r\nHost: x"
    ),
}


async def test_hostile_heads_get_aiohttps_verdict(servers: tuple[Server, Server], sdk: Any) -> None:
    publish = raw_request(sdk, "POST", EVENTS, event())
    verdicts = await compare(servers, {name: mutate(publish) for name, mutate in HOSTILE.items()})
    # The comparison only means something if both kinds of verdict occur.
    assert verdicts["plain"] == (200,)
    assert verdicts["bare LF before Transfer-Encoding"] == (400, -1)
    assert verdicts["NUL in a value"] == (400, -1)
    assert verdicts["space in a header name"] == (400, -1)
    assert verdicts["huge value, inside aiohttp's limit"] == (200,)


async def test_hostile_heads_after_a_publish_on_the_same_connection(servers: tuple[Server, Server], sdk: Any) -> None:
    """The fast path's parser, reused for the next request on a keep-alive connection, agrees too.

    The first publish is answered before the hostile request is sent: aiohttp drops the answers to
    requests it parsed in the same read as a malformed one, which the fast path, answering in order,
    does not imitate.
    """
    first = raw_request(sdk, "POST", EVENTS, event("first"))
    publish = raw_request(sdk, "POST", EVENTS, event())
    wires = {name: mutate(publish) for name, mutate in HOSTILE.items()}
    verdicts = await compare(servers, wires, first=first)
    assert verdicts["plain"] == (200, 200)
    assert verdicts["NUL in a value"] == (200, 400, -1)


INTERESTING = [b"\x00", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x7f", b"\x80", b",", b"\r\n ", b"0", b"a"]


def generated(publish: bytes, count: int, seed: int) -> dict[str, bytes]:
    """`count` heads, each with one to three interesting bytes put in, replaced or cut at random places."""
    rng = random.Random(seed)
    head, _, body = publish.partition(b"\r\n\r\n")
    wires = {}
    for number in range(count):
        mutated = bytearray(head)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(mutated))
            insert = rng.choice(INTERESTING)
            action = rng.randrange(3)
            if action == 0:
                mutated[at:at] = insert
            elif action == 1:
                mutated[at : at + 1] = insert
            else:
                del mutated[at]
        wires[f"generated #{number}: {bytes(mutated)!r}"] = bytes(mutated) + b"\r\n\r\n" + body
    return wires


def parsed_by_aiohttp(wire: bytes) -> tuple[list[int], bool]:
    """Where each complete request aiohttp's own parser reads from `wire` ends, fed byte by byte, and
    whether it then refuses the rest (its server answers that with a 400 and closes)."""
    loop = asyncio.get_running_loop()
    parser = HttpRequestParser(
        BaseProtocol(loop), loop, 1 << 16, max_line_size=8190, max_field_size=8190, max_headers=128
    )
    payloads: list[Any] = []
    ends: list[int] = []
    for at in range(len(wire)):
        try:
            messages, _, _ = parser.feed_data(wire[at : at + 1])
        except HttpProcessingError:
            return ends, True
        payloads += [payload for _, payload in messages]
        if sum(payload.is_eof() for payload in payloads) > len(ends):
            ends.append(at + 1)
    return ends, False


async def answered_by_lean(port: int, wire: bytes, ends: list[int]) -> tuple[list[int], bool]:
    """`wire` sent to the lean server one request at a time where aiohttp's parser ends them (so no read
    holds a request and what follows it: aiohttp drops the answers of such reads), then the rest; the
    ends that were answered, and whether the rest was refused (aiohttp's 400, then close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered: list[int] = []
    try:
        start = 0
        for end in ends:
            writer.write(wire[start:end])
            start = end
            await read_answer(reader)
            answered.append(end)
        writer.write(wire[start:])
        rest = await answers(reader)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionResetError, StopIteration):
        return answered, False
    finally:
        writer.close()
    if rest not in ((400, -1), (), (-1,)):  # refused; open; closed after the last answer (HTTP/1.0, 0.9)
        return [*answered, -1], False  # an answer aiohttp's parser has no request for
    return answered, rest == (400, -1)


async def test_generated_heads_get_aiohttps_verdict(servers: tuple[Server, Server], sdk: Any) -> None:
    """Against aiohttp's parser in this process, fed byte by byte: the same requests end at the same
    bytes on the lean server, and the same rest is refused."""
    lean, _ = servers
    publish = raw_request(sdk, "POST", EVENTS, event())
    wires = generated(publish, 150, seed=13)
    expected = [parsed_by_aiohttp(wire) for wire in wires.values()]
    got = await asyncio.gather(
        *(answered_by_lean(lean.port, wire, ends) for wire, (ends, _) in zip(wires.values(), expected, strict=True))
    )
    differ = {name: (g, e) for name, g, e in zip(wires, got, expected, strict=True) if g != e}
    assert not differ, f"lean vs aiohttp's parser differ: {differ}"
    assert {refused for _, refused in got} == {True, False}  # both verdicts occur

"""Sliced fan-out (relay/fanout.py) on real sockets: a big channel's event goes out a slice per loop
iteration, other work is answered in between, and every subscriber still sees the channel's events in order.

The slice is made small (SLICE) so a few thousand raw subscribers give many slices in a second or two.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pusher.http
import pytest

from relay.fanout import FANOUT_SLICE
from tests.integration.wire import build_request
from tests.support.inprocess import APP, RelayServer
from tests.support.timeouts import scaled
from tests.transport.rawws import TEXT, RawSocket, frame, open_websocket

SLICE = 50
SUBSCRIBERS = 1500  # 30 slices
EVENTS = f"/apps/{APP.id}/events"


@pytest.fixture
def transport() -> str:
    return "lean"


def publish_request(sdk: Any, name: str, channel: str = "big") -> bytes:
    request = build_request(sdk, "POST", EVENTS, {"name": name, "data": name, "channels": [channel]})
    body: bytes = request.body
    target = f"{request.path}?{pusher.http.make_query_string(request.query_params)}"
    head = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def subscriber(server: RelayServer, channel: str = "big") -> RawSocket:
    sock = await open_websocket(server.port)
    assert b"connection_established" in await sock.read_text()
    subscribe = {"event": "pusher:subscribe", "data": {"channel": channel}}
    await sock.write(frame(TEXT, orjson.dumps(subscribe)))
    assert b"subscription_succeeded" in await sock.read_text()
    return sock


async def subscribers(server: RelayServer, count: int) -> list[RawSocket]:
    """`count` subscribers of "big", in registry order (the order a fan-out takes them)."""
    socks: list[RawSocket] = []
    for start in range(0, count, 100):
        socks += await asyncio.gather(*(subscriber(server) for _ in range(min(100, count - start))))
    return socks


async def events(sock: RawSocket, count: int) -> list[str]:
    """The names of the next `count` channel events (pongs and the like are skipped)."""
    names: list[str] = []
    while len(names) < count:
        message = orjson.loads(await sock.read_text())
        if not message["event"].startswith("pusher"):
            names.append(message["event"])
    return names


@pytest.fixture
def sliced(server: RelayServer) -> RelayServer:
    assert FANOUT_SLICE > SLICE  # the default really is bigger: this test makes it small
    server.node.fanout.slice_size = SLICE
    return server


async def test_consecutive_big_fanouts_keep_order(sliced: RelayServer, sdk: Any) -> None:
    socks = await subscribers(sliced, SUBSCRIBERS)
    small = await subscriber(sliced, "small")
    reader, writer = await asyncio.open_connection("127.0.0.1", sliced.port)
    # Pipelined: the second and third events arrive while the first one's slices are still going out.
    writer.write(b"".join(publish_request(sdk, name) for name in ("e1", "e2", "e3")))
    writer.write(publish_request(sdk, "s1", "small"))
    for _ in range(4):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(2)
    assert sliced.node.fanout.in_progress() == 1  # a small channel never waits behind a big one
    assert await events(small, 1) == ["s1"]
    received = await asyncio.gather(*(events(sock, 3) for sock in socks))
    assert all(names == ["e1", "e2", "e3"] for names in received)
    assert sliced.node.fanout.in_progress() == 0
    writer.close()


async def test_ping_and_publish_answered_during_a_big_fanout(sliced: RelayServer, sdk: Any) -> None:
    socks = await subscribers(sliced, SUBSCRIBERS)
    last = socks[-1]  # written in the last slice
    reader, writer = await asyncio.open_connection("127.0.0.1", sliced.port)
    writer.write(publish_request(sdk, "e1"))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(2)
    assert sliced.node.fanout.in_progress() == 1
    # The fan-out is under way: a ping and another API request are answered before it reaches `last`.
    await last.write(frame(TEXT, b'{"event":"pusher:ping","data":{}}'))
    writer.write(publish_request(sdk, "elsewhere", "other"))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(2)
    assert orjson.loads(await last.read_text())["event"] == "pusher:pong"
    assert sliced.node.fanout.in_progress() == 1
    assert await events(last, 1) == ["e1"]
    await asyncio.gather(*(events(sock, 1) for sock in socks[:-1]))
    writer.close()


async def test_subscriber_leaving_in_the_middle(sliced: RelayServer, sdk: Any) -> None:
    socks = await subscribers(sliced, SUBSCRIBERS)
    leaver, closer, stayer = socks[-1], socks[-2], socks[-3]  # all three in the last slice
    reader, writer = await asyncio.open_connection("127.0.0.1", sliced.port)
    writer.write(publish_request(sdk, "e1"))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(2)
    unsubscribe = {"event": "pusher:unsubscribe", "data": {"channel": "big"}}
    await leaver.write(frame(TEXT, orjson.dumps(unsubscribe)) + frame(TEXT, b'{"event":"pusher:ping","data":{}}'))
    closer.writer.transport.abort()
    # The ping is answered after the unsubscribe was handled; no e1 may come before or after the pong.
    assert orjson.loads(await leaver.read_text())["event"] == "pusher:pong"
    assert await events(stayer, 1) == ["e1"]
    writer.write(publish_request(sdk, "e2"))
    assert await events(stayer, 1) == ["e2"]
    await leaver.write(frame(TEXT, b'{"event":"pusher:ping","data":{}}'))
    assert orjson.loads(await asyncio.wait_for(leaver.read_text(), scaled(5)))["event"] == "pusher:pong"
    assert sliced.node.fanout.in_progress() == 0
    writer.close()


async def test_subscriber_joining_in_the_middle_gets_only_later_events(sliced: RelayServer, sdk: Any) -> None:
    """Events published before a subscribe are not sent to it, also when their fan-out starts after it."""
    socks = await subscribers(sliced, SUBSCRIBERS)
    reader, writer = await asyncio.open_connection("127.0.0.1", sliced.port)
    writer.write(publish_request(sdk, "e1") + publish_request(sdk, "e2"))  # e2 waits behind e1's slices
    for _ in range(2):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(2)
    joiner = await subscriber(sliced)
    assert sliced.node.fanout.in_progress() == 1  # it joined while e1 or e2 was still going out
    writer.write(publish_request(sdk, "e3"))
    assert await events(joiner, 1) == ["e3"]
    received = await asyncio.gather(*(events(sock, 3) for sock in socks))
    assert all(names == ["e1", "e2", "e3"] for names in received)
    writer.close()

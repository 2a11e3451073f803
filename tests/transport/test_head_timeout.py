"""A socket that sends no complete request head within HEAD_TIMEOUT is dropped (slowloris); one timer serves
every socket still reading its head (relay/transport/listener.py), so each must go at its own deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.transport import listener
from tests.support.inprocess import RelayServer
from tests.support.timeouts import scaled
from tests.transport.rawws import open_websocket

TIMEOUT = 0.6
PARTIAL_HEAD = b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture
def transport() -> str:
    return "lean"


async def dropped_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from `started` until the server closed the socket (EOF or reset)."""
    async with asyncio.timeout(scaled(10)):
        try:
            while await reader.read(100):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def test_each_slow_head_is_dropped_at_its_own_deadline(
    server: RelayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "HEAD_TIMEOUT", TIMEOUT)
    first_reader, first = await asyncio.open_connection("127.0.0.1", server.port)
    first_started = time.monotonic()
    first.write(PARTIAL_HEAD)
    await asyncio.sleep(TIMEOUT / 2)
    second_reader, second = await asyncio.open_connection("127.0.0.1", server.port)
    second_started = time.monotonic()
    second.write(PARTIAL_HEAD)
    upgraded = await open_websocket(server.port)  # a complete head in time: no deadline any more
    assert b"connection_established" in await upgraded.read_text()
    first_dropped = await dropped_after(first_reader, first_started)
    assert TIMEOUT * 0.9 <= first_dropped < TIMEOUT + scaled(1)
    assert not second_reader.at_eof()  # not swept along with the first: its deadline is later
    second_dropped = await dropped_after(second_reader, second_started)
    assert TIMEOUT * 0.9 <= second_dropped < TIMEOUT + scaled(1)
    await asyncio.sleep(TIMEOUT)
    assert len(server.node.connections) == 1
    assert not upgraded.reader.at_eof()
    first.close()
    second.close()
    upgraded.writer.close()

"""With the in-memory adapter, the lean transport opens, subscribes, publishes and disconnects without a task
(relay.eager): a task per operation was ~5 us of a connect's or a publish's CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

import orjson
import pytest

from tests.support.inprocess import RelayServer
from tests.support.timeouts import scaled
from tests.transport.rawws import TEXT, frame, open_websocket
from tests.transport.test_sliced_fanout import publish_request


@pytest.fixture
def transport() -> str:
    return "lean"


def relay_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Installs a task factory on `loop` that notes every task relay's own code creates."""
    created: list[str] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        code = getattr(coro, "cr_code", None)
        if code is not None and "/relay/" in code.co_filename:
            created.append(code.co_qualname)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return created


async def test_connect_subscribe_publish_disconnect_make_no_task(server: RelayServer, sdk: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # before counting: aiohttp's
    loop = asyncio.get_running_loop()
    created = relay_tasks(loop)
    try:
        sock = await open_websocket(server.port)
        assert b"connection_established" in await sock.read_text()
        await sock.write(frame(TEXT, b'{"event":"pusher:subscribe","data":{"channel":"news"}}'))
        assert b"subscription_succeeded" in await sock.read_text()
        writer.write(publish_request(sdk, "e1", "news"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert orjson.loads(await sock.read_text())["event"] == "e1"
        sock.writer.transport.abort()
        async with asyncio.timeout(scaled(5)):
            while server.node.connections:
                await asyncio.sleep(0.01)
        assert created == []
    finally:
        loop.set_task_factory(None)
        writer.close()

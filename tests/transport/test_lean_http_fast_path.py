"""The lean transport's HTTP fast path (relay/transport/http_fast.py) on raw keep-alive sockets.

Which side answered is visible on the wire: aiohttp sends a `Server` header, the fast path does not.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pusher.http
import pytest

from relay.adapters.local import LocalAdapter
from relay.config import RedisConfig
from tests.integration.wire import build_request
from tests.support.inprocess import APP, RelayServer, RelayServerFactory, server_config, start_in_process
from tests.support.redis import RedisProcess
from tests.support.timeouts import scaled

EVENTS = f"/apps/{APP.id}/events"
BATCH = f"/apps/{APP.id}/batch_events"
CHANNELS = f"/apps/{APP.id}/channels"
Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
def transport() -> str:
    return "lean"


def event(name: str = "my-event", channel: str = "news") -> dict[str, Any]:
    return {"name": name, "data": '{"a":1}', "channels": [channel]}


def raw_request(sdk: Any, method: str, path: str, params: dict[str, Any] | None = None, headers: str = "") -> bytes:
    """The SDK-signed request as bytes on the wire; POSTs carry a Content-Length unless `headers` say otherwise."""
    request = build_request(sdk, method, path, params)
    body: bytes = request.body or b""
    target = f"{request.path}?{pusher.http.make_query_string(request.query_params)}"
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST" and "transfer-encoding" not in headers.lower():
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + headers + "\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    status_line, *lines = head[:-4].decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), scaled(5))
    return int(status_line.split(" ")[1]), headers, body


async def open_http(server: RelayServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def test_keep_alive_mixed_requests_on_one_connection(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    await client.subscribed("news")
    reader, writer = await open_http(server)
    writer.write(raw_request(sdk, "POST", EVENTS, event("first")))
    status, headers, body = await read_response(reader)
    assert (status, body, headers["content-type"]) == (200, b"{}", "application/json")
    assert "server" not in headers  # the fast path answered
    await client.expect("first", "news")
    # A GET goes to aiohttp with the connection; the publish after it is aiohttp's too, and still works.
    writer.write(raw_request(sdk, "GET", CHANNELS))
    status, headers, body = await read_response(reader)
    assert (status, orjson.loads(body)) == (200, {"channels": {"news": {}}})
    assert "server" in headers
    writer.write(raw_request(sdk, "POST", EVENTS, event("second")))
    status, headers, body = await read_response(reader)
    assert (status, body) == (200, b"{}")
    assert "server" in headers
    await client.expect("second", "news")
    writer.close()


async def test_pipelined_requests_answered_in_order(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    await client.subscribed("news")
    reader, writer = await open_http(server)
    bad = raw_request(sdk, "POST", EVENTS, event("bad")).replace(b"auth_signature=", b"auth_signature=0")
    batch = {"batch": [{"name": "b1", "data": "1", "channel": "news"}, {"name": "b2", "data": "2", "channel": "news"}]}
    writer.write(
        raw_request(sdk, "POST", EVENTS, event("e1"))
        + bad
        + raw_request(sdk, "POST", BATCH, batch)
        + raw_request(sdk, "POST", EVENTS, event("e2"))
    )
    answers = [await read_response(reader) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 401, 200, 200]
    assert b"signature" in answers[1][2]
    assert all("server" not in headers for _, headers, _ in answers)
    for name in ("e1", "b1", "b2", "e2"):
        await client.expect(name, "news")
    await client.expect_silence()
    writer.close()


async def test_body_split_across_many_writes(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    await client.subscribed("news")
    reader, writer = await open_http(server)
    wire = raw_request(sdk, "POST", EVENTS, {**event("split"), "data": "x" * 3000})
    for start in range(0, len(wire), 97):
        writer.write(wire[start : start + 97])
        await writer.drain()
        await asyncio.sleep(0.001)  # pacing only: each piece its own segment
    status, headers, body = await read_response(reader)
    assert (status, body) == (200, b"{}")
    assert "server" not in headers
    frame = await client.expect("split", "news")
    assert frame["data"] == "x" * 3000
    writer.close()


async def test_connection_close_is_honoured(server: RelayServer, sdk: Any) -> None:
    reader, writer = await open_http(server)
    writer.write(raw_request(sdk, "POST", EVENTS, event(), headers="Connection: close\r\n"))
    status, headers, body = await read_response(reader)
    assert (status, body, headers.get("connection")) == (200, b"{}", "close")
    assert await asyncio.wait_for(reader.read(), scaled(5)) == b""
    writer.close()


async def test_oversize_content_length_413_and_close(relay_server: RelayServerFactory) -> None:
    server = await relay_server(max_request_size=2000)
    reader, writer = await open_http(server)
    writer.write(f"POST {EVENTS}?auth_key=x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n".encode())
    status, headers, body = await read_response(reader)
    assert (status, orjson.loads(body), headers.get("connection")) == (
        413,
        {"error": "Request body is too large"},
        "close",
    )
    # relay reads and drops the body it refused before closing (so the client sees the 413, not a reset):
    # a client that sends no body and says so (EOF) is closed at once.
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), scaled(5)) == b""
    writer.close()


async def test_oversize_body_is_read_and_dropped_before_the_close(relay_server: RelayServerFactory) -> None:
    server = await relay_server(max_request_size=2000)
    reader, writer = await open_http(server)
    writer.write(f"POST {EVENTS}?auth_key=x HTTP/1.1\r\nHost: a\r\nContent-Length: 500000\r\n\r\n".encode())
    status, _, _ = await read_response(reader)
    assert status == 413
    for _ in range(50):  # the whole declared body, after the answer: no reset while it is sent
        writer.write(b"x" * 10_000)
        await writer.drain()
    assert await asyncio.wait_for(reader.read(), scaled(5)) == b""
    writer.close()


async def test_chunked_post_is_served_by_aiohttp(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    await client.subscribed("news")
    reader, writer = await open_http(server)
    wire = raw_request(sdk, "POST", EVENTS, event("chunked"), headers="Transfer-Encoding: chunked\r\n")
    head, _, body = wire.partition(b"\r\n\r\n")
    writer.write(head + b"\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    status, headers, answer = await read_response(reader)
    assert (status, answer) == (200, b"{}")
    assert "server" in headers
    await client.expect("chunked", "news")
    writer.close()


async def test_errors_are_the_same_bytes_as_aiohttps(relay_server: RelayServerFactory, sdk: Any) -> None:
    apps = (APP, replace(APP, id="2002", key="k2", enabled=False))
    reference = await relay_server(*apps, transport="aiohttp")
    lean = await relay_server(*apps)
    disabled = pusher.Pusher(app_id="2002", key="k2", secret=APP.secret, host="127.0.0.1")
    requests = [
        raw_request(sdk, "POST", EVENTS, event()).replace(b"auth_signature=", b"auth_signature=0"),
        raw_request(sdk, "POST", EVENTS, {"name": "x", "data": 1, "channels": ["news"]}),
        raw_request(sdk, "POST", BATCH, {"batch": []}),
        raw_request(sdk, "POST", "/apps/9999/events", event()),
        raw_request(disabled, "POST", "/apps/2002/events", event()),
        raw_request(sdk, "POST", EVENTS, event()).replace(b"auth_key=", b"auth_key=z"),
    ]
    answers = []
    for running in (reference, lean):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        for request in requests:
            writer.write(request)
            status, headers, body = await read_response(reader)
            answers.append((status, body, "server" in headers))
        writer.close()
    expected, got = answers[: len(requests)], answers[len(requests) :]
    assert [(s, b) for s, b, _ in got] == [(s, b) for s, b, _ in expected]
    assert [s for s, _, _ in got] == [401, 400, 400, 404, 403, 401]
    assert not any(via_aiohttp for _, _, via_aiohttp in got)


async def test_publish_that_waits_for_redis_keeps_order(
    relay_server: RelayServerFactory, redis_process: RedisProcess, sdk: Any
) -> None:
    """A cache channel's publish awaits Redis: answered from a task, still in request order."""
    server = await relay_server(redis=RedisConfig(url=redis_process.url))
    client = await server.connect()
    await client.subscribed("news")
    reader, writer = await open_http(server)
    writer.write(
        raw_request(sdk, "POST", EVENTS, event("c1", "cache-news"))
        + raw_request(sdk, "POST", EVENTS, event("n1"))
        + raw_request(sdk, "POST", EVENTS, {**event("c2", "cache-news"), "data": 5})
        + raw_request(sdk, "POST", EVENTS, event("n2"))
    )
    answers = [await read_response(reader) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 400, 200]
    assert all("server" not in headers for _, headers, _ in answers)
    await client.expect("n1", "news")
    await client.expect("n2", "news")
    late = await server.connect()
    await late.subscribed("cache-news")
    assert (await late.expect("c1", "cache-news"))["data"] == '{"a":1}'
    writer.close()


class TimedAdapter(LocalAdapter):
    """A cluster-state query under asyncio.timeout(), as a Redis adapter might bound its calls. It does not
    declare completes_synchronously: a subclass of LocalAdapter is taken to suspend unless it says so."""

    async def subscription_count(self, app_id: str, channel: str) -> int:
        async with asyncio.timeout(scaled(5)):
            return await super().subscription_count(app_id, channel)


async def test_publish_runs_inside_a_task(sdk: Any) -> None:
    """asyncio.timeout() needs a current task: the fast path publishes in one, as aiohttp's handlers do."""
    server = await start_in_process(server_config(transport="lean"), TimedAdapter())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw_request(sdk, "POST", EVENTS, {**event(), "info": "subscription_count"}))
        status, headers, body = await read_response(reader)
        assert (status, orjson.loads(body)) == (200, {"channels": {"news": {"subscription_count": 0}}})
        assert "server" not in headers  # the fast path answered
        writer.close()
    finally:
        await server.stop()

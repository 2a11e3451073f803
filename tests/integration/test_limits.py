"""Per-app limits from issue 15: the HTTP API rate limit (429 with Retry-After and a JSON body the SDKs
pass on) and channels per connection (a subscription_error, the connection stays usable)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pusher  # type: ignore[import-untyped]
import pytest

from tests.integration.wire import Api, build_request
from tests.support.inprocess import APP, RelayServerFactory


async def test_api_rate_limit_answers_429_with_retry_after(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, api_rate_limit=5))
    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    statuses: list[int] = []
    for n in range(12):
        try:
            await asyncio.to_thread(sdk.trigger, "news", "tick", {"n": n})
            statuses.append(200)
        except pusher.errors.PusherBadStatus as error:
            assert str(error).startswith("429: "), error
            assert "Too many requests" in str(error)
            statuses.append(429)
    assert statuses[:10] == [200] * 10  # the burst: two seconds' worth
    assert statuses[10:] == [429, 429]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.port}/apps/{APP.id}/channels") as response:
            assert response.status == 401  # unsigned requests are refused before they count
    await asyncio.sleep(0.25)  # one request's worth back at 5 per second
    await asyncio.to_thread(sdk.trigger, "news", "tick", {"n": 100})


async def test_429_carries_retry_after_header_and_json(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, api_rate_limit=1))
    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    answers: list[tuple[int, str, bytes]] = []
    for path, params in [(f"/apps/{APP.id}/channels", {})] * 3 + [
        (f"/apps/{APP.id}/events", {"name": "e", "data": "1", "channels": ["news"]})  # the fast path too
    ]:
        request = build_request(sdk, "POST" if params else "GET", path, params)
        url = f"http://127.0.0.1:{server.port}{request.path}"
        async with http.request(
            request.method, url, params=request.query_params, data=request.body, headers=request.headers
        ) as response:
            answers.append((response.status, response.headers.get("Retry-After", ""), await response.read()))
    assert [status for status, _, _ in answers] == [200, 200, 429, 429]
    for _, retry_after, raw in answers[2:]:
        body = orjson.loads(raw)
        assert body["error"].startswith("Too many requests")
        assert body["retry_after"] >= 1
        assert retry_after == str(body["retry_after"])


async def test_channels_per_connection(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_channels_per_connection=3))
    client = await server.connect()
    for n in range(3):
        await client.subscribed(f"room-{n}")
    await client.subscribe("room-3")
    refused = await client.expect("pusher:subscription_error", "room-3")
    data = refused["data"] if isinstance(refused["data"], dict) else orjson.loads(refused["data"])
    assert data["type"] == "LimitReached" and "at most 3 channels" in data["error"]
    await client.subscribed("room-0")  # subscribing again to one it has is fine
    await client.unsubscribe("room-1")
    await client.subscribed("room-3")  # a freed place can be used


@pytest.mark.parametrize("limit", [0])
async def test_zero_means_no_limit(relay_server: RelayServerFactory, limit: int) -> None:
    server = await relay_server(replace(APP, max_channels_per_connection=limit))
    client = await server.connect()
    for n in range(1100):
        await client.subscribe(f"room-{n}")
    for n in range(1100):
        await client.expect("pusher_internal:subscription_succeeded", f"room-{n}")

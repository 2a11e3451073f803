"""A body over max_request_size gets its 413 JSON answer, not a connection reset (issue 15).

The official SDKs send the whole body before they read the answer; closing the socket with input
still unread makes the kernel reset it, and the SDK then reports "Request failed" instead of the 413.
relay reads and drops the rest of the body (bounded) before it closes. Both transports, both SDKs.
"""

from __future__ import annotations

import asyncio

import orjson
import pusher  # type: ignore[import-untyped]
import pytest
import requests

from tests.clients.harness import APP_ID, APP_KEY, APP_SECRET, Clients, app_config
from tests.support import scaled
from tests.support.fixtures import RelayFactory

pytestmark = pytest.mark.timeout(scaled(120))

SIZES = (1 << 20, 4 << 20, 16 << 20)
TRIES = 3


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_node_sdk_sees_the_413(relay_factory: RelayFactory, clients: Clients, transport: str) -> None:
    relay = relay_factory(app_config(), extra_args=["--transport", transport])
    for size in SIZES:
        for _ in range(TRIES):
            result = await clients.node_trigger(relay.port, channel="news", event="big", body_size=size)
            assert result["type"] == "request_failed" and result["status"] == 413, (size, result)
            assert "too large" in orjson.loads(result["body"])["error"]


def _python_post(port: int, size: int) -> requests.Response:
    """A signed POST built by the official Python SDK and sent the way it sends (requests)."""
    sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=port, ssl=False)
    body = {"name": "big", "channels": ["news"], "data": "a" * size}
    request = pusher.http.Request(sdk._pusher_client, "POST", f"/apps/{APP_ID}/events", body)
    url = f"http://127.0.0.1:{port}{request.path}"
    return requests.post(url, params=request.query_params, data=request.body, headers=request.headers, timeout=30)


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_python_sdk_sees_the_413(relay_factory: RelayFactory, transport: str) -> None:
    relay = relay_factory(app_config(), extra_args=["--transport", transport])
    for size in SIZES:
        for _ in range(TRIES):
            response = await asyncio.to_thread(_python_post, relay.port, size)
            assert response.status_code == 413, (size, response.text)
            assert "too large" in response.json()["error"]

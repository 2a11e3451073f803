"""pusher.signin(), server-to-user events and terminate_user_connections with pusher-js."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.clients.harness import Clients, python_sdk
from tests.support import NodeClient, RelayProcess, scaled

pytestmark = [pytest.mark.auth_features, pytest.mark.timeout(scaled(60))]

# Sign-in needs no app setting: relay answers pusher:signin for every app (docs/protocol.md §9.11).

USER_DATA: dict[str, Any] = {"id": "42", "user_info": {"name": "Zoe"}}


def error_code(line: dict[str, Any]) -> object:
    data = line["error"].get("data") if isinstance(line["error"], dict) else None
    return data.get("code") if isinstance(data, dict) else None


async def signed_in_client(relay: RelayProcess, clients: Clients) -> NodeClient:
    """A pusher-js client signed in as user 42 and subscribed to its #server-to-user-42 channel."""
    client = await clients.pusher_js(relay.port, user_data=USER_DATA)
    await client.send({"op": "signin"})
    success = await client.expect(type="message", event="pusher:signin_success")
    assert success["data"] == {"user_data": '{"id":"42","user_info":{"name":"Zoe"}}'}
    # pusher-js subscribes the user channel itself after signin_success.
    await client.expect(type="message", event="pusher_internal:subscription_succeeded", channel="#server-to-user-42")
    return client


async def test_send_to_user_reaches_signed_in_pusher_js(relay: RelayProcess, clients: Clients) -> None:
    client = await signed_in_client(relay, clients)

    await asyncio.to_thread(python_sdk(relay.port).send_to_user, "42", "greet", {"hi": 1})

    event = await client.expect(type="user_event", event="greet")
    assert event["data"] == {"hi": 1}


async def test_terminate_user_connections_closes_with_4009_and_pusher_js_stays_disconnected(
    relay: RelayProcess, clients: Clients
) -> None:
    client = await signed_in_client(relay, clients)

    await asyncio.to_thread(python_sdk(relay.port).terminate_user_connections, "42")

    frame = await client.expect(type="message", event="pusher:error")
    assert frame["data"]["code"] == 4009
    # pusher-js reports the pusher:error frame, then the close code, as connection errors.
    for _ in range(2):
        await client.expect(lambda line: error_code(line) == 4009, type="error")
    # Only a refusal (close code 4001-4099) moves pusher-js to "disconnected" on its own.
    await client.expect(type="state", previous="connected", current="disconnected")
    await client.send({"op": "state"})
    report = await client.expect(type="state_report")
    assert report["state"] == "disconnected"
    assert report["retry_scheduled"] is False

"""relay behind the real Caddy reverse proxy: WebSocket and HTTP API through Caddy's port."""

from __future__ import annotations

import pytest

from tests.clients.harness import Clients, python_trigger, subscribe
from tests.support import RelayProcess, scaled
from tests.support.fixtures import CaddyFactory

pytestmark = pytest.mark.timeout(scaled(60))


async def test_pusher_js_through_caddy_receives_event_triggered_through_caddy(
    relay: RelayProcess, caddy_factory: CaddyFactory, clients: Clients
) -> None:
    caddy = caddy_factory(relay.port)
    client = await clients.pusher_js(caddy.port)
    await subscribe(client, "news")

    await python_trigger(caddy.port, "news", "via-caddy", {"proxied": True})

    event = await client.expect(type="event", channel="news", event="via-caddy")
    assert event["data"] == {"proxied": True}

"""SIGHUP reloads the apps of a running `relay serve` without dropping connections (README, "Reloading").

A real relay subprocess gets real signals; pusher-js clients and the official Python SDK check what
changed: an added app works at once, a rotated secret is in force, an invalid file is refused with the
start-up message while the old apps stay, and a removed app's connections are closed with 4001.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pusher  # type: ignore[import-untyped]
import pytest

from tests.clients.harness import APP_ID, APP_KEY, APP_SECRET, Clients, app_config, python_trigger, subscribe
from tests.support import RelayProcess, scaled, to_toml
from tests.support.fixtures import RelayFactory

pytestmark = pytest.mark.timeout(scaled(60))

OTHER = {"id": "2002", "key": "other-key", "secret": "other-secret", "enable_client_events": True}


def write_config(relay: RelayProcess, document: dict[str, Any] | str) -> None:
    relay.config_path.write_text(document if isinstance(document, str) else to_toml(document))


async def reload(relay: RelayProcess, count: int) -> None:
    """SIGHUP, then wait for the count-th 'configuration reloaded' or 'invalid configuration' line."""
    os.kill(relay.pid, signal.SIGHUP)
    async with asyncio.timeout(scaled(10)):
        while _reloads(relay.log_text()) < count:
            await asyncio.sleep(0.05)


def _reloads(log: str) -> int:
    return log.count("configuration reloaded") + log.count("invalid configuration")


def sdk(app: dict[str, Any], port: int, secret: str | None = None) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=app["id"], key=app["key"], secret=secret or app["secret"], host="127.0.0.1", port=port, ssl=False
    )


async def test_sighup_adds_rotates_refuses_and_removes_without_dropping(
    relay_factory: RelayFactory, clients: Clients
) -> None:
    relay = relay_factory(app_config())
    staying = await clients.pusher_js(relay.port, name="staying")
    await subscribe(staying, "news")

    # 1. Add an app: pusher-js can use it at once; the existing connection is untouched.
    base = app_config()
    write_config(relay, {"apps": [*base["apps"], OTHER]})  # type: ignore[list-item]
    await reload(relay, 1)
    credentials = {"key": OTHER["key"], "app_id": OTHER["id"], "secret": OTHER["secret"]}
    newcomer = await clients.pusher_js(relay.port, name="newcomer", **credentials)
    await subscribe(newcomer, "orders")
    await asyncio.to_thread(sdk(OTHER, relay.port).trigger, ["orders"], "order.created", {"id": 1})
    assert (await newcomer.expect(type="event", channel="orders", event="order.created"))["data"] == {"id": 1}
    await python_trigger(relay.port, "news", "still.here", {"n": 1})
    await staying.expect(type="event", channel="news", event="still.here")

    # 2. Rotate the first app's secret: the new one signs, the old one no longer does.
    rotated = {**base["apps"][0], "secret": "rotated-secret"}  # type: ignore[index]
    write_config(relay, {"apps": [rotated, OTHER]})
    await reload(relay, 2)
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}
    with pytest.raises(pusher.errors.PusherBadAuth):
        await asyncio.to_thread(sdk(app, relay.port).trigger, ["news"], "old.secret", {})
    await asyncio.to_thread(sdk(app, relay.port, "rotated-secret").trigger, ["news"], "new.secret", {"n": 2})
    await staying.expect(type="event", channel="news", event="new.secret")

    # 3. An invalid file: refused with the start-up message, everything stays as it was.
    write_config(relay, {"apps": [rotated, {**OTHER, "key": rotated["key"]}]})
    await reload(relay, 3)
    assert "relay: invalid configuration: apps[1].key: duplicate app key" in relay.log_text()
    await asyncio.to_thread(sdk(OTHER, relay.port).trigger, ["orders"], "order.created", {"id": 2})
    await newcomer.expect(type="event", channel="orders", event="order.created")

    # 4. Remove the second app: its connection is closed with 4001; the first app's stays.
    write_config(relay, {"apps": [rotated]})
    await reload(relay, 4)
    closed = await newcomer.expect(type="message", event="pusher:error")
    assert closed["data"]["code"] == 4001
    await asyncio.to_thread(sdk(app, relay.port, "rotated-secret").trigger, ["news"], "after.removal", {})
    await staying.expect(type="event", channel="news", event="after.removal")
    states = [(line["previous"], line["current"]) for line in staying.seen if line["type"] == "state"]
    assert states == [("connecting", "connected")]  # never dropped

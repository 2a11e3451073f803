"""Nothing leaks (issue 3, item 7): thousands of connections join and leave public, private, presence,
cache and server-to-user channels (some sign in, some send client events, some unsubscribe first, some
close, some drop the TCP connection abruptly, some vanish while their subscribes are still in flight),
then every registry of the in-process server must be empty again.

The server runs in this process on each transport (tests.support.inprocess), so the test reads the
node's internals: `node.connections`, `node.registry`, `node.users`, the LocalAdapter's connection,
subscription and member maps, the metrics gauge, the transport's outbox and tasks, aiohttp's connection
map and the webhook dispatcher's queues (webhooks go to a real local receiver).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.adapters.local import LocalAdapter
from relay.app import WEBHOOKS_KEY
from relay.config import WEBHOOK_EVENT_TYPES, WebhookConfig, WebhookSettings
from relay.node import Node
from relay.webhooks import WebhookDispatcher
from tests.integration.wire import (
    Api,
    Client,
    auth_sdk,
    connect,
    open_socket,
    presence_auth,
    private_auth,
    signin,
    signin_auth,
    wait_until,
)
from tests.support.inprocess import APP, RelayServer, RelayServerFactory
from tests.support.timeouts import scaled

WAVES = 4
PER_WAVE = 500  # 2,000 connections in all
BATCH = 100  # connections opened and driven concurrently
PONG = {"event": "pusher:pong", "data": "{}"}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[int]]]:
    """A webhook receiver answering 200; records how many events each request carried."""
    received: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(len(body["events"]))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/hook", received
    finally:
        await server.close()


def plan(index: int) -> list[tuple[str, str | None]]:
    """(channel, presence user_id) for connection `index`: overlapping channels and shared users."""
    channels: list[tuple[str, str | None]] = [
        (f"news-{index % 10}", None),
        (f"cache-feed-{index % 5}", None),
        (f"private-orders.{index % 7}", None),
        (f"presence-room.{index % 4}", str(index % 60)),  # ~8 connections per user per room
    ]
    if index % 2:
        channels.append((f"private-cache-c{index % 3}", None))
    if index % 3 == 0:
        channels.append((f"presence-cache-lobby.{index % 2}", str(index % 25)))
    return channels


async def drive(url: str, signer: Any, index: int) -> None:
    """One connection's life; how it ends depends on `index`."""
    client = await connect(url, max_queue=None)
    ending = index % 5
    subscribed: list[str] = []
    if index % 4 == 0:
        user_id = f"u{index % 30}"
        auth, user_data = signin_auth(signer, client.socket_id, {"id": user_id})
        await signin(client, auth, user_data)
        await client.send({"event": "pusher:subscribe", "data": {"auth": "", "channel": f"#server-to-user-{user_id}"}})
        subscribed.append(f"#server-to-user-{user_id}")
    for channel, user_id in plan(index):
        if user_id is not None:
            auth, data = presence_auth(signer, client.socket_id, channel, {"user_id": user_id})
            await client.subscribe(channel, auth, data)
        elif channel.startswith("private-"):
            await client.subscribe(channel, private_auth(signer, client.socket_id, channel))
        else:
            await client.subscribe(channel)
        subscribed.append(channel)
    if ending == 4:
        client.ws.transport.abort()  # gone while its subscribes are still being processed
        return
    await client.send({"event": "client-typing", "data": {"i": index}, "channel": f"private-orders.{index % 7}"})
    frames = await read_until_pong(client)
    succeeded = {f["channel"] for f in frames if f.get("event") == "pusher_internal:subscription_succeeded"}
    assert succeeded == set(subscribed), (index, sorted(set(subscribed) - succeeded), frames[:5])
    if ending == 0:
        for channel in subscribed:
            await client.unsubscribe(channel)
        await read_until_pong(client)
        await client.close()
    elif ending == 1:
        client.ws.transport.abort()  # no close frame, no unsubscribe
    else:
        await client.close()


async def churn(url: str, signer: Any, sdk: Any, waves: int, per_wave: int) -> set[str]:
    """`waves` x `per_wave` connections through their lives, BATCH at a time; returns the cache channels
    that got an event."""
    published: set[str] = set()
    for wave in range(waves):
        for first in range(wave * per_wave, (wave + 1) * per_wave, BATCH):
            await asyncio.gather(*(drive(url, signer, index) for index in range(first, first + BATCH)))
        # Cache channels get a last event between waves, so later subscribers take the cached path.
        channel = f"cache-feed-{wave}"
        await asyncio.to_thread(sdk.trigger, channel, "tick", str(wave))
        published.add(channel)
    return published


async def assert_node_empty(node: Node, published: set[str], total: int) -> None:
    await wait_until(lambda: not node.connections, scaled(30))
    adapter = node.adapter
    assert isinstance(adapter, LocalAdapter)
    assert node.connections == {}
    assert node.registry.is_empty(), list(node.registry.entries())[:10]
    assert node.users == {}
    state = adapter.state
    assert state._connections == {}
    assert state._subscriptions == {}, list(state._subscriptions)[:10]
    assert state._members == {}, list(state._members)[:10]
    assert adapter.is_empty()
    # The cache is per channel with a TTL, not per socket: only the channels published to hold an event.
    assert {channel for _, channel in state._cache} <= published
    assert node.metrics.app(APP.id).connections_opened == total
    assert sum(node.metrics.app(APP.id).closed_by_code.values()) == total
    assert len(node._verifiers) == 1 and len(node._settings) == 1


async def read_until_pong(client: Client) -> list[dict[str, Any]]:
    await client.send({"event": "pusher:ping", "data": {}})
    frames = []
    while (frame := await client.recv(scaled(20))) != PONG:
        frames.append(frame)
    return frames


async def test_thousands_of_connections_leave_every_registry_empty(
    relay_server: RelayServerFactory, http: Any, receiver: tuple[str, list[int]]
) -> None:
    url, received = receiver
    app = replace(
        APP,
        client_event_rate=0,
        max_presence_members=1000,
        webhooks=(WebhookConfig(url=url, event_types=WEBHOOK_EVENT_TYPES),),
    )
    settings = WebhookSettings(batch_window=0.02, leave_delay=0.05)
    server = await relay_server(app, webhook=settings)
    node = server.node
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    started = time.monotonic()
    published = await churn(server.ws_url(), signer, sdk, WAVES, PER_WAVE)
    await assert_node_empty(node, published, WAVES * PER_WAVE)
    total = WAVES * PER_WAVE
    # The HTTP API sees the same: no channel left.
    channels = await asyncio.to_thread(sdk.channels_info)
    assert channels == {"channels": {}}

    # aiohttp's own per-connection state (aborted sockets are noticed a little later).
    runner = server.running.runner
    assert runner is not None and runner.server is not None
    web_server = runner.server
    sdk._pusher_client.http.session.close()  # the SDK's keep-alive HTTP connection is not ours to count
    await wait_until(lambda: not web_server._connections, scaled(10))
    endpoint_outboxes = [
        route.handler.__self__._outbox  # type: ignore[attr-defined]
        for route in server.app.router.routes()
        if getattr(route.handler, "__name__", "") == "handle"
    ]
    for outbox in endpoint_outboxes:
        assert outbox is None or outbox._dirty == []
    lean = server.running.lean
    if lean is not None:
        await wait_until(lambda: not lean.tasks, scaled(10))
        assert lean.websocket.outbox._dirty == []

    # Webhooks: everything queued was sent, nothing held per channel or socket.
    dispatcher = server.app[WEBHOOKS_KEY]
    assert isinstance(dispatcher, WebhookDispatcher)
    await wait_until(lambda: dispatcher.queued == 0 and dispatcher._store.backlog == 0, scaled(30))
    assert dispatcher.idle
    assert sum(received) > total  # the receiver really got the stream (occupied/vacated/members/...)
    assert time.monotonic() - started < scaled(90)


async def test_refused_and_terminated_connections_leave_nothing(relay_server: RelayServerFactory, http: Any) -> None:
    """Refusal paths (quota, bad sign-in, terminate, full presence) clean up too."""
    app = replace(APP, max_connections=20, max_presence_members=2)
    server = await relay_server(app)
    node = server.node
    adapter = node.adapter
    assert isinstance(adapter, LocalAdapter)
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    for _ in range(3):
        clients = [await connect(server.ws_url(), max_queue=None) for _ in range(20)]
        over = await connect_refused(server)
        assert over == 4100
        for n, client in enumerate(clients):
            auth, data = presence_auth(signer, client.socket_id, "presence-full", {"user_id": str(n)})
            await client.subscribe("presence-full", auth, data)  # only 2 fit
            if n < 5:
                auth, user_data = signin_auth(signer, client.socket_id, {"id": "victim"})
                await signin(client, auth, user_data)
            elif n < 10:
                await signin(client, "app-key:" + "0" * 64, '{"id":"x"}')  # a 4009 error frame; stays open
        await asyncio.to_thread(sdk.terminate_user_connections, "victim")
        for client in clients[5:]:
            await client.close()
        await wait_until(lambda: not node.connections, scaled(10))
    assert node.registry.is_empty() and node.users == {} and adapter.is_empty()
    traffic = node.metrics.app(APP.id)
    assert traffic.connections_opened == sum(traffic.closed_by_code.values()) == 60


async def connect_refused(server: RelayServer) -> int:
    client = await open_socket(server.ws_url())
    frame = await client.recv()
    assert frame["event"] == "pusher:error", frame
    code, _ = await client.closed()
    return code

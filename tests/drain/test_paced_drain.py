"""The paced drain (relay.drain): a real `relay serve` gets a real SIGTERM with 2,000 clients connected.

The test checks the spread, not only the end: every client is closed with 4200, none before readiness
turned false and the grace period passed, and the closes are spread evenly over the drain window rather
than bunched at its start. Presence members closed by the drain leave only after the hold.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import orjson
import pusher  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.wire import Client, auth_sdk, presence_auth
from tests.integration.wire import connect as wire_connect
from tests.support import DEFAULT_APP, RelayProcess, scaled
from tests.support.fixtures import RelayFactory
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.timeout(scaled(120))

CLIENTS = 2000
WINDOW = 4.0
GRACE = 0.5


async def open_client(relay: RelayProcess) -> ClientConnection:
    ws = await connect(relay.ws_url(), max_queue=None, ping_interval=None, open_timeout=scaled(20))
    established = orjson.loads(await ws.recv())
    assert established["event"] == "pusher:connection_established"
    return ws


async def closed_at(ws: ClientConnection) -> tuple[float, int | None]:
    """When the server's close frame came, and its code (frames before it are read and dropped)."""
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass  # a 4200 close is an "error" close to websockets; its code is what the test reads
    return time.monotonic(), ws.close_code


async def test_sigterm_closes_connections_spread_over_the_window(relay_factory: RelayFactory) -> None:
    relay = relay_factory(env={"RELAY_DRAIN_WINDOW": str(WINDOW), "RELAY_SHUTDOWN_GRACE": str(GRACE)})
    clients: list[ClientConnection] = []
    for start in range(0, CLIENTS, 200):
        clients += await asyncio.gather(*(open_client(relay) for _ in range(start, min(start + 200, CLIENTS))))
    watchers = [asyncio.ensure_future(closed_at(ws)) for ws in clients]

    signalled = time.monotonic()
    os.kill(relay.pid, signal.SIGTERM)
    results = await asyncio.wait_for(asyncio.gather(*watchers), scaled(GRACE + WINDOW + 20))
    code = await asyncio.to_thread(relay._popen.wait, scaled(20))  # type: ignore[union-attr]
    assert code == 0, relay.log_tail()

    assert {close_code for _, close_code in results} == {4200}
    offsets = sorted(at - signalled for at, _ in results)
    print(f"closes from {offsets[0]:.2f} s to {offsets[-1]:.2f} s after SIGTERM")
    assert offsets[0] >= GRACE - 0.05, "a connection was closed before the grace period ended"
    assert offsets[-1] <= GRACE + WINDOW + scaled(2), "the drain outlasted its window"
    # Evenly spread: each eighth of the window holds about 1/8 of the closes (uniform moments).
    buckets = [0] * 8
    for offset in offsets:
        index = min(7, max(0, int((offset - GRACE) / (WINDOW / 8))))
        buckets[index] += 1
    print(f"closes per eighth of the window: {buckets}")
    assert all(CLIENTS * 0.06 <= count <= CLIENTS * 0.22 for count in buckets), buckets
    for ws in clients:
        await ws.close()


async def test_presence_member_moves_to_another_node_without_a_flap(
    relay_factory: RelayFactory, redis_process: RedisProcess
) -> None:
    """The user's connection is drained from node A and back on node B within the hold: the observer on B
    sees neither member_removed nor member_added, and later events reach the moved member."""
    config = {"apps": [dict(DEFAULT_APP)], "redis_url": redis_process.url}
    draining = relay_factory(config, env={"RELAY_DRAIN_WINDOW": "1", "RELAY_SHUTDOWN_GRACE": "0.2"})
    staying = relay_factory(config)
    signer = auth_sdk(str(DEFAULT_APP["id"]), str(DEFAULT_APP["key"]), str(DEFAULT_APP["secret"]))
    channel = "presence-room.1"

    async def join(relay: RelayProcess, user_id: str) -> Client:
        client = await wire_connect(relay.ws_url())
        auth, data = presence_auth(signer, client.socket_id, channel, {"user_id": user_id})
        await client.subscribed(channel, auth, data)
        return client

    observer = await join(staying, "observer")
    mover = await join(draining, "7")
    assert orjson.loads((await observer.expect("pusher_internal:member_added", channel))["data"])["user_id"] == "7"

    os.kill(draining.pid, signal.SIGTERM)
    assert (await mover.expect("pusher:error"))["data"]["code"] == 4200
    assert (await mover.closed(scaled(10)))[0] == 4200
    await join(staying, "7")  # what pusher-js does on 4200: reconnect at once, here to node B
    code = await asyncio.to_thread(draining._popen.wait, scaled(20))  # type: ignore[union-attr]
    assert code == 0, draining.log_tail()
    await asyncio.sleep(1.0)  # past the hold: the drained membership has left by now
    await observer.expect_silence()  # no member_removed, no member_added

    sdk = pusher.Pusher(app_id=str(DEFAULT_APP["id"]), key=str(DEFAULT_APP["key"]),
                        secret=str(DEFAULT_APP["secret"]), host="127.0.0.1", port=staying.port, ssl=False)  # fmt: skip
    users = await asyncio.to_thread(sdk.users_info, channel)
    assert sorted(user["id"] for user in users["users"]) == ["7", "observer"]

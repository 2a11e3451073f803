"""One liveness record per node, and one "node lost" event serving the cluster state and the webhook queue.

A node here is what relay/app.py builds with Redis: one Heartbeat shared by a RedisAdapter and a
RedisStore. A crashed node is a real process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from relay.config import RedisConfig
from relay.redis.adapter import RedisAdapter
from relay.redis.heartbeat import Heartbeat
from relay.webhooks.redis_store import RedisStore
from tests.adapters.conftest import APP, TEST_NODE_TIMEOUT, RecordingListener, TestNode
from tests.support import TIMEOUT, RedisProcess, scaled

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "relay-live"

# A node with members and a delivery in flight, killed before it can hand anything back.
_CRASHING_NODE = f"""
import asyncio, sys
from relay.config import RedisConfig
from relay.redis.adapter import RedisAdapter
from relay.redis.heartbeat import Heartbeat
from relay.webhooks.model import Delivery
from relay.webhooks.redis_store import RedisStore
from tests.adapters.conftest import RecordingListener, TestNode

async def main() -> None:
    config = RedisConfig(sys.argv[1], "{PREFIX}", {TEST_NODE_TIMEOUT})
    heartbeat = Heartbeat(config, "crashing")
    adapter = RedisAdapter(config, heartbeat=heartbeat)
    store = RedisStore(config, 100, 100, heartbeat=heartbeat)
    node = TestNode(adapter, RecordingListener("crashing"))
    await adapter.start(node.listener)
    await store.start()
    await node.subscribe("presence-room", "c1", "carol", {{"n": 3}})
    await store.push([Delivery("d" * 32, "{APP}", "http://127.0.0.1:9/hook", ({{"name": "member_added"}},), 1)])
    taken = await store.take(5.0)
    print("ready", heartbeat.owner, taken.id if taken else None, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class FullNode:
    """The Redis parts of one relay node, on one heartbeat."""

    heartbeat: Heartbeat
    adapter: RedisAdapter
    store: RedisStore
    test_node: TestNode

    @property
    def listener(self) -> RecordingListener:
        return self.test_node.listener


def config_for(redis: RedisProcess) -> RedisConfig:
    return RedisConfig(redis.url, PREFIX, TEST_NODE_TIMEOUT)


@pytest.fixture
async def full_nodes(redis_process: RedisProcess) -> AsyncIterator[list[FullNode]]:
    nodes: list[FullNode] = []
    yield nodes
    for node in nodes:
        await node.store.close()
        await node.adapter.close()


async def start_node(redis: RedisProcess, nodes: list[FullNode], name: str) -> FullNode:
    config = config_for(redis)
    heartbeat = Heartbeat(config, name)
    adapter = RedisAdapter(config, heartbeat=heartbeat)
    store = RedisStore(config, 100, 100, heartbeat=heartbeat)
    node = FullNode(heartbeat, adapter, store, TestNode(adapter, RecordingListener(name)))
    await adapter.start(node.listener)
    await store.start()
    nodes.append(node)
    return node


async def crash_a_node(redis: RedisProcess) -> str:
    """Start the crashing node, wait until it holds a member and a delivery, SIGKILL it; its owner name."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_NODE, redis.url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            words = (await process.stdout.readline()).decode().split()
        assert words[0] == "ready" and words[2] == "d" * 32, words
        return words[1]
    finally:
        process.send_signal(signal.SIGKILL)  # by PID: no chance to hand anything back
        await process.wait()


async def redis_keys(redis: RedisProcess, pattern: str) -> list[str]:
    client = Redis.from_url(redis.url)
    try:
        return sorted(key.decode() for key in await client.keys(pattern))
    finally:
        await client.aclose()


async def poll(read: object, expected: object, what: str, timeout: float) -> None:
    """Poll an async reader until it returns `expected`."""
    assert callable(read)
    seen: object = None
    try:
        async with asyncio.timeout(timeout):
            while (seen := await read()) != expected:
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:.1f}s: {what} (last seen {seen!r})") from None


async def test_one_record_per_node_whatever_parts_it_runs(
    redis_process: RedisProcess, full_nodes: list[FullNode]
) -> None:
    a = await start_node(redis_process, full_nodes, "a")
    await start_node(redis_process, full_nodes, "b")
    await a.test_node.subscribe("presence-room", "a1", "alice", None)
    assert await redis_keys(redis_process, "*alive*") == [f"{PREFIX}:node:a:alive", f"{PREFIX}:node:b:alive"]
    client = Redis.from_url(redis_process.url)
    try:
        # The record names the adapter's incarnation; the webhook store needs nothing of its own.
        assert (await client.get(f"{PREFIX}:node:a:alive")).decode() == a.heartbeat.owner
        assert sorted(m.decode() for m in await client.smembers(f"{PREFIX}:node_ids")) == ["a", "b"]
    finally:
        await client.aclose()


async def test_a_crashed_node_is_taken_over_by_both_parts_from_one_lost_event(
    redis_process: RedisProcess, full_nodes: list[FullNode]
) -> None:
    survivor = await start_node(redis_process, full_nodes, "survivor")
    await survivor.test_node.subscribe("presence-room", "s1", "sam", None)
    crashed_owner = await crash_a_node(redis_process)
    assert crashed_owner == "crashing.1"
    assert await survivor.adapter.members(APP, "presence-room") == {"carol": {"n": 3}, "sam": None}
    assert await redis_keys(redis_process, f"{PREFIX}:webhooks:in_flight:*") == [
        f"{PREFIX}:webhooks:in_flight:crashing"
    ]

    # The record expires after node_timeout; the survivor's next beat hands the node to both parts.
    await survivor.listener.wait_for(
        lambda: survivor.listener.members_lost == [(APP, "presence-room", "carol")],
        "carol removed with the crashed node",
        timeout=scaled(TEST_NODE_TIMEOUT * 3 + 5),
    )
    taken = await survivor.store.take(scaled(TEST_NODE_TIMEOUT * 2))
    assert taken is not None and taken.id == "d" * 32  # the delivery it had in flight is back in the queue
    await survivor.store.ack(taken)
    assert await redis_keys(redis_process, f"{PREFIX}:webhooks:in_flight:crashing") == []
    assert await survivor.adapter.members(APP, "presence-room") == {"sam": None}

    client = Redis.from_url(redis_process.url)

    async def node_ids() -> list[str]:
        return sorted(m.decode() for m in await client.smembers(f"{PREFIX}:node_ids"))

    try:
        # Forgotten once both parts took it over: later beats report nothing more.
        await poll(node_ids, ["survivor"], "the crashed node forgotten", scaled(TEST_NODE_TIMEOUT * 2))
        assert await client.scard(f"{PREFIX}:nodes") == 1  # the survivor's incarnation only
    finally:
        await client.aclose()
    assert survivor.listener.members_lost == [(APP, "presence-room", "carol")]  # once


async def test_a_node_presumed_dead_runs_on_as_a_new_incarnation(
    redis_process: RedisProcess, full_nodes: list[FullNode]
) -> None:
    node = await start_node(redis_process, full_nodes, "cut")
    await node.test_node.subscribe("presence-room", "c1", "carol", {"n": 3})
    first = node.heartbeat.owner
    client = Redis.from_url(redis_process.url)
    try:
        assert await client.delete(f"{PREFIX}:node:cut:alive") == 1  # as if it expired
        await poll(lambda: asyncio.sleep(0, node.heartbeat.evictions), 1, "the eviction noticed", TIMEOUT)
        await poll(lambda: asyncio.sleep(0, node.adapter.evictions), 1, "the adapter's session ended", TIMEOUT)
        await node.adapter.wait_connected()
        record = await client.get(f"{PREFIX}:node:cut:alive")
        assert record is not None and record.decode() == node.heartbeat.owner != first
        # Its share is written back under the new name, and what the old one held is swept.

        async def owners() -> set[bytes]:
            return set(await client.smembers(f"{PREFIX}:nodes"))

        await poll(owners, {node.heartbeat.owner.encode()}, "the old incarnation swept", TIMEOUT)
        assert await node.adapter.members(APP, "presence-room") == {"carol": {"n": 3}}
        assert node.listener.members_lost == []  # no other node swept carol: nobody was told she left
    finally:
        await client.aclose()


@dataclass
class Recording:
    """A heartbeat member that records the lost nodes it is handed (and may fail to take them over)."""

    asked: list[list[str]]
    fail: bool = False

    async def beat(self) -> None:
        return None

    async def nodes_lost(self, node_ids: Sequence[str]) -> None:
        self.asked.append(list(node_ids))
        if self.fail:
            raise ConnectionError("cannot take them over now")

    def evicted(self) -> None:
        return None


async def test_a_lost_node_is_handed_over_on_every_beat_until_nothing_of_it_is_left(
    redis_process: RedisProcess,
) -> None:
    config = config_for(redis_process)
    client = Redis.from_url(redis_process.url)

    async def node_ids() -> list[str]:
        return sorted(m.decode() for m in await client.smembers(f"{PREFIX}:node_ids"))

    try:
        # A node's record as its heartbeat writes it (lua/liveness/register.lua), never refreshed, and a
        # delivery it had in flight: what a crashed node with webhooks leaves.
        await client.set(f"{PREFIX}:node:dead:alive", "dead.1", px=100)
        await client.sadd(f"{PREFIX}:node_ids", "dead")
        await client.rpush(f"{PREFIX}:webhooks:in_flight:dead", b"{}")
        watcher = Heartbeat(config, "watcher")
        failing, recording = Recording([], fail=True), Recording([])
        await watcher.register()
        watcher.join(failing)
        watcher.join(recording)
        try:
            wait = scaled(TEST_NODE_TIMEOUT * 4)
            await poll(lambda: asyncio.sleep(0, len(recording.asked) >= 3), True, "handed over again", wait)
            assert len(failing.asked) >= 2  # a member that fails neither stops the other nor is skipped
            assert set(map(tuple, recording.asked)) == {("dead",)}
            # Its in-flight list is still there (no webhook store here): the node is not forgotten.
            assert await node_ids() == ["dead", "watcher"]
            await client.delete(f"{PREFIX}:webhooks:in_flight:dead")  # as a webhook store re-queuing it would
            await poll(node_ids, ["watcher"], "forgotten once nothing of it is left", TIMEOUT)
            asked = len(recording.asked)
            await asyncio.sleep(watcher.interval * 3)
            assert len(recording.asked) <= asked + 1  # at most the beat already under way
        finally:
            await watcher.leave(failing)
            await watcher.leave(recording)
    finally:
        await client.aclose()
    assert await redis_keys(redis_process, f"{PREFIX}:node:watcher:alive") == []  # a graceful stop ends the record

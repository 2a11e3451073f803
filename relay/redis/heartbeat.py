"""Heartbeat: a node's one identity and one liveness record in Redis, and the one event "node lost".

The record is `P:node:<node_id>:alive` (key layout in lua/liveness/common.lua). Its value is the node's
current incarnation, `<node_id>.<n>`: the cluster adapter writes its state under that name and starts a
new incarnation for every Redis session, so entries written before and after an outage can be told
apart; the webhook store only needs to know that the node is alive. Both read the same record, so they
cannot disagree about a node.

Every node_timeout/3 the heartbeat refreshes the record and learns which other nodes' records expired.
Each lost node is handed to every member (the adapter sweeps its cluster state and announces its
members' departure; the webhook store re-queues its in-flight deliveries), and on every beat again until
Redis holds nothing of it any more: no incarnation in the cluster state's owner set, no in-flight list
(lua/liveness/forget.lua checks that, so a node whose parts differ, e.g. one without webhooks, never
forgets what another part still has to take over). When this node's own record had expired (it was
presumed dead, e.g. cut off from Redis for longer than node_timeout) the beat writes a new incarnation
and tells the members; the adapter then ends its session and the next one writes the node's share back
under a newer incarnation still.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import Any, Final, Protocol

from relay.config import RedisConfig
from relay.redis.link import RedisClient, RedisUnavailable, open_pool
from relay.redis.scripts import load_scripts
from relay.redis.topology import key_prefix

logger = logging.getLogger(__name__)

MIN_INTERVAL: Final = 0.05  # seconds between beats, whatever node_timeout says


class HeartbeatMember(Protocol):
    """A part of the node that keeps state in Redis under the node's name."""

    async def beat(self) -> None:
        """Called on every beat (a call still running from the last beat is not started again)."""

    async def nodes_lost(self, node_ids: Sequence[str]) -> None:
        """Take over what these nodes left in Redis; raise when that failed (it is asked again)."""

    def evicted(self) -> None:
        """This node was presumed dead and now runs as a new incarnation (Heartbeat.owner)."""


def new_node_id() -> str:
    return secrets.token_hex(6)


class Heartbeat:
    def __init__(self, config: RedisConfig, node_id: str | None = None) -> None:
        self.node_id = node_id or new_node_id()
        self.node_timeout = config.node_timeout  # a node silent this long is lost
        self.interval = max(config.node_timeout / 3, MIN_INTERVAL)
        self.evictions = 0  # beats that found this node's own record expired
        self._url = config.url
        self._prefix = key_prefix(config.url, config.prefix)  # one hash tag on a Redis Cluster
        self._alive = self.alive_key(self.node_id)
        self._node_ids = f"{self._prefix}:node_ids"
        self._scripts = load_scripts("liveness")
        self._incarnation = 0
        self._registered = False
        self._registering = asyncio.Lock()
        self._client: RedisClient | None = None
        self._members: list[HeartbeatMember] = []
        self._timer: asyncio.Task[None] | None = None
        self._calls: dict[int, asyncio.Task[None]] = {}  # by id(member): each member's beat in progress
        self._taking_over: asyncio.Task[None] | None = None  # lost nodes being handed to the members
        self._failing = False  # the last beat failed (logged once per failing stretch)
        self._failing_members: set[int] = set()  # id() of members whose last beat failed (likewise)
        self._closed = False  # the last member left: nothing may write the record again

    def alive_key(self, node_id: str) -> str:
        """The liveness record of node `node_id` (lua/liveness/common.lua, alive_key)."""
        return f"{self._prefix}:node:{node_id}:alive"

    @property
    def owner(self) -> str:
        """The current incarnation: the name this node's cluster state is written under."""
        return f"{self.node_id}.{self._incarnation}"

    def _redis(self) -> RedisClient:
        if self._closed:
            raise RedisUnavailable(f"the heartbeat of node {self.node_id} has stopped")
        if self._client is None:
            timeout = max(1.0, min(5.0, self.interval))
            self._client = open_pool(self._url, f"relay-{self.node_id}-heartbeat", timeout)
        return self._client

    async def _script(self, name: str, keys: Sequence[str], *args: Any) -> Any:
        return await self._scripts[name].run(self._redis(), keys, (self._prefix, self.node_id, *args))

    def _ttl_ms(self) -> int:
        return max(1, int(self.node_timeout * 1000))

    # Incarnations ----------------------------------------------------------------------------------

    async def incarnate(self) -> str:
        """Start a new incarnation and return its name; every earlier one is dead from now on."""
        async with self._registering:
            return await self._write_incarnation()

    async def register(self) -> None:
        """Make this node known and alive, unless it is already (for a member that needs no new name)."""
        async with self._registering:
            if not self._registered:
                await self._write_incarnation()

    async def _write_incarnation(self) -> str:
        incarnation = self._incarnation + 1
        owner = f"{self.node_id}.{incarnation}"
        await self._script("register", (self._alive, self._node_ids), owner, self._ttl_ms())
        self._incarnation = incarnation
        self._registered = True
        return owner

    async def retire(self, owner: str) -> None:
        """`owner`'s entries may be swept from now on (a graceful stop of the part that wrote them)."""
        if owner != self.owner or not self._registered:
            return
        if self._members:
            await self.incarnate()  # the node lives on for its other members, under a new name
        else:
            await self._end()

    async def _end(self) -> None:
        if self._registered:
            self._registered = False
            client = self._client
            if client is not None:  # (_redis() refuses once closed: this is the record's very last write)
                await self._scripts["retire"].run(client, (self._alive,), (self._prefix, self.node_id, self.owner))

    # Members ---------------------------------------------------------------------------------------

    def join(self, member: HeartbeatMember) -> None:
        """Call `member` on every beat from now on."""
        self._closed = False
        self._members.append(member)
        if self._timer is None:
            self._timer = asyncio.create_task(self._run(), name=f"relay-heartbeat-{self.node_id}")

    async def leave(self, member: HeartbeatMember, *, graceful: bool = True) -> None:
        """Stop calling `member` (a call in progress is cancelled). With the last member the beats stop and,
        when graceful, the record ends at once; otherwise it expires, as on a crash. A member leaving as on
        a crash while others stay ends the current incarnation, so what it wrote under it is swept."""
        if member in self._members:
            self._members.remove(member)
        self._failing_members.discard(id(member))
        running = self._calls.pop(id(member), None)
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if self._members:
            if not graceful and self._registered:
                try:
                    async with asyncio.timeout(self.interval + 1.0):
                        await self.incarnate()
                except Exception as error:
                    logger.warning("node %s could not start a new incarnation: %r", self.node_id, error)
            return
        self._closed = True
        if self._timer is None:
            await self._close_client()
            return
        timer, self._timer = self._timer, None
        taking_over, self._taking_over = self._taking_over, None
        for task in (timer, taking_over):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(self.interval + 1.0):
                if graceful:
                    await self._end()
        except Exception as error:
            logger.warning("node %s could not end its heartbeat in Redis (it expires instead): %r", self.node_id, error)
        finally:
            await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # Beats -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self._tick(await self._beat())
            except Exception:
                logger.exception("heartbeat of node %s failed", self.node_id)  # a bug: the next beat comes anyway

    def _tick(self, lost: list[str]) -> None:
        """Start each member's beat, and the hand-over of lost nodes (neither waited for: a member slowed
        down by Redis delays neither the next refresh nor the other members, and is not piled up on)."""
        for member in list(self._members):
            running = self._calls.get(id(member))
            if running is None or running.done():
                self._calls[id(member)] = asyncio.create_task(self._call(member))
        if lost and (self._taking_over is None or self._taking_over.done()):
            self._taking_over = asyncio.create_task(self._take_over(lost))

    async def _beat(self) -> list[str]:
        """Refresh this node's record; the ids of other nodes that are lost (none when Redis failed)."""
        try:
            async with asyncio.timeout(self.interval), self._registering:
                if not self._registered:
                    await self._write_incarnation()  # Redis was unreachable when the members started
                    return []
                following = f"{self.node_id}.{self._incarnation + 1}"
                evicted, lost = await self._script(
                    "beat", (self._alive, self._node_ids), self.owner, self._ttl_ms(), following
                )
                if evicted == 1:
                    self._incarnation += 1
        except Exception as error:
            if not self._failing:
                logger.warning("heartbeat of node %s failed: %r", self.node_id, error)
            self._failing = True
            return []
        self._failing = False
        if evicted == 1:
            self.evictions += 1
            logger.warning("node %s was presumed dead by the cluster; it runs on as %s", self.node_id, self.owner)
            for member in list(self._members):
                try:
                    member.evicted()
                except Exception:
                    logger.exception("node %s: a member failed to hear of its eviction", self.node_id)
        return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in lost]

    async def _call(self, member: HeartbeatMember) -> None:
        try:
            await member.beat()
        except Exception as error:
            # Once per failing stretch: while Redis is away every beat of every member fails alike.
            if id(member) not in self._failing_members:
                logger.warning("heartbeat of node %s: %s failed: %r", self.node_id, type(member).__name__, error)
            self._failing_members.add(id(member))
        else:
            self._failing_members.discard(id(member))

    async def _take_over(self, lost: list[str]) -> None:
        """Hand the lost nodes to every member, then forget those Redis holds nothing of any more."""
        outcomes = await asyncio.gather(
            *(self._hand_over(member, lost) for member in list(self._members)), return_exceptions=True
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            logger.warning("node %s could not yet take over what nodes %s left: %r", self.node_id, lost, failures[0])
        try:
            async with asyncio.timeout(self.node_timeout):
                await self._script("forget", (self._node_ids,), *lost)
        except Exception as error:
            logger.debug("node %s could not forget lost nodes yet: %r", self.node_id, error)

    async def _hand_over(self, member: HeartbeatMember, lost: list[str]) -> None:
        # Bounded: a member stuck on a half-open connection must not stop the take-overs of later beats.
        async with asyncio.timeout(self.node_timeout):
            await member.nodes_lost(lost)

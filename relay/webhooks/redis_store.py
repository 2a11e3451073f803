"""RedisStore: the webhook queue, held leaves and dead letters shared by every node through Redis.

Delivery is at-least-once. A node moves a delivery from the shared `ready` list into its own `in_flight`
list (BLMOVE) before posting it and removes it only once it is delivered, retried or dead-lettered. A node
that stops gracefully puts its in-flight deliveries back; when one dies, its liveness record expires and
the first live node whose heartbeat reports it lost (relay/redis/heartbeat.py, the same record and event
the cluster adapter uses) puts them back after RedisConfig.node_timeout. The scripts are in
relay/redis/lua/webhooks/.
Receivers de-duplicate by delivery id.

Keys, under `<prefix>:webhooks:` (`{<prefix>}:webhooks:` on a Redis Cluster: one slot, so every script and
transaction below touches one shard)
  ready                  LIST of Delivery JSON, sent oldest first by whichever node takes it
  retry                  ZSET Delivery JSON -> wall-clock ms when it may be tried again
  in_flight:<node>       LIST of Delivery JSON being posted by <node> (its liveness record is
                         `<prefix>:node:<node>:alive`, relay/redis/lua/liveness/common.lua)
  dead:<app_id>          LIST of DeadLetter JSON, oldest first, capped
  leaves                 ZSET Hold JSON -> wall-clock ms when the held leave is sent
  leave:<hold key>       STRING token of the pending hold; a join DELs it, the releaser compare-and-DELs it
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Final, cast

from relay.config import RedisConfig
from relay.redis.heartbeat import Heartbeat
from relay.redis.link import close_now, open_blocking, open_pool
from relay.redis.scripts import load_scripts
from relay.redis.topology import key_prefix
from relay.webhooks.model import Cancel, DeadLetter, Delivery, Hold, MalformedRecord
from relay.webhooks.store import now_ms

logger = logging.getLogger(__name__)

# A held leave's key outlives its due time: it is removed by the releaser (or a join), never by expiry,
# so a cluster that is down for a while still sends the leave when it comes back. The TTL only guards
# against a key orphaned by a bug.
HOLD_KEY_TTL_MS: Final = 24 * 3600 * 1000
# Held leaves and retries handled per script call, so one call never blocks Redis for long.
SCRIPT_BATCH: Final = 200
# Seconds allowed for each step of close(); past it the in-flight deliveries are recovered by another node.
CLOSE_TIMEOUT: Final = 3.0


class RedisStore:
    """DeliveryStore over Redis; see the module docstring for the keys."""

    def __init__(
        self,
        config: RedisConfig,
        queue_limit: int,
        dead_letter_limit: int,
        node_id: str | None = None,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._heartbeat = heartbeat or Heartbeat(config, node_id)
        self.node_id = self._heartbeat.node_id
        timeout = max(1.0, min(5.0, self._heartbeat.interval))
        self._client = open_pool(config.url, f"relay-{self.node_id}-webhooks", timeout)
        # BLMOVE on a connection of its own: close() cuts it instead of waiting for a cancelled block to end.
        self._blocking = open_blocking(config.url, f"relay-{self.node_id}-webhooks-take", timeout)
        self._queue_limit = max(1, queue_limit)
        self._dead_letter_limit = max(1, dead_letter_limit)
        base = f"{key_prefix(config.url, config.prefix)}:webhooks:"  # one hash tag on a Redis Cluster
        self._base = base
        self._ready = base + "ready"
        self._retry = base + "retry"
        self._leaves = base + "leaves"
        self._leave_prefix = base + "leave:"
        self._in_flight = self._in_flight_key(self.node_id)
        self._scripts = load_scripts("webhooks")
        # Delivery id -> the exact bytes in our in_flight list, which LREM needs.
        self._leases: dict[str, bytes] = {}
        self._own_dues: list[int] = []  # heap: due ms of holds this node wrote
        self._backlog = 0
        self._beating = False

    def _in_flight_key(self, node_id: str) -> str:
        return f"{self._base}in_flight:{node_id}"

    def _dead_key(self, app_id: str) -> str:
        return f"{self._base}dead:{app_id}"

    @property
    def local_events(self) -> int:
        return 0  # everything this store holds is in Redis, bounded there

    @property
    def backlog(self) -> int:
        return self._backlog

    # Life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            # Known and alive before the first BLMOVE, so a crash right after it still gets its deliveries back.
            await self._heartbeat.register()
            await self.beat()
        except Exception:
            # Like the rest of relay, start without Redis and catch up: events wait in memory meanwhile.
            logger.exception("webhooks: Redis is not answering at start (node %s)", self.node_id)
        self._heartbeat.join(self)
        self._beating = True

    async def close(self) -> int:
        if self._beating:
            self._beating = False
            await self._heartbeat.leave(self)
        try:
            # Bounded: a Redis that hangs must not hold up shutdown (nor a test run) for ever.
            async with asyncio.timeout(CLOSE_TIMEOUT):
                moved = await self._recover(self.node_id, force=True)
            if moved:
                logger.info("webhooks: handed %d in-flight deliveries back to the shared queue", moved)
        except Exception:
            # Not fatal: once our liveness record expires, another node hands them back.
            logger.exception("webhooks: could not hand in-flight deliveries back on close (node %s)", self.node_id)
        finally:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await close_now(self._blocking)
                    await self._client.aclose()
            except TimeoutError:
                logger.warning("webhooks: Redis connections did not close within %gs", CLOSE_TIMEOUT)
        return 0

    # Heartbeat member -------------------------------------------------------------------------------

    async def beat(self) -> None:
        """Read the shared backlog for the metrics."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.llen(self._ready)
            pipe.zcard(self._retry)
            ready, retrying = await pipe.execute()
        self._backlog = int(ready) + int(retrying) + len(self._leases)

    async def nodes_lost(self, node_ids: Sequence[str]) -> None:
        """Hand the lost nodes' in-flight deliveries back to the shared queue."""
        for node_id in node_ids:
            moved = await self._recover(node_id, force=False)
            if moved > 0:
                logger.warning("webhooks: node %s is gone; re-queued its %d in-flight deliveries", node_id, moved)

    def evicted(self) -> None:
        """Nothing to do: other nodes may have re-queued our in-flight deliveries (receivers de-duplicate)."""

    async def _recover(self, node_id: str, force: bool) -> int:
        keys = [self._in_flight_key(node_id), self._ready, self._heartbeat.alive_key(node_id)]
        return int(await self._scripts["recover"].run(self._client, keys, ["1" if force else "0"]))

    # Held leaves ---------------------------------------------------------------------------------

    async def settle(self, ops: Sequence[Hold | Cancel]) -> list[bool]:
        if not ops:
            return []
        # One transaction, in order: a leave and the join after it in the same batch cancel each other.
        async with self._client.pipeline(transaction=True) as pipe:
            for op in ops:
                key = self._leave_prefix + op.key
                if isinstance(op, Hold):
                    pipe.set(key, op.token, px=HOLD_KEY_TTL_MS)
                    pipe.zadd(self._leaves, {op.encode(): op.due_ms})
                else:
                    pipe.delete(key)
            results = await pipe.execute()
        answers: list[bool] = []
        index = 0
        for op in ops:
            if isinstance(op, Hold):
                heapq.heappush(self._own_dues, op.due_ms)
                answers.append(True)
                index += 2
            else:
                answers.append(int(results[index]) == 1)
                index += 1
        return answers

    async def release_due(self, until_ms: int) -> list[Hold]:
        while self._own_dues and self._own_dues[0] <= until_ms:
            heapq.heappop(self._own_dues)
        released: list[Hold] = []
        while True:
            members = await self._scripts["release"].run(
                self._client, [self._leaves], [until_ms, SCRIPT_BATCH, self._leave_prefix]
            )
            for member in members:
                try:
                    released.append(Hold.decode(member))
                except MalformedRecord as error:
                    logger.error("webhooks: dropped a malformed held leave: %s", error)
            if len(members) < SCRIPT_BATCH:
                return released

    def next_due_ms(self) -> int | None:
        return self._own_dues[0] if self._own_dues else None

    # Deliveries ----------------------------------------------------------------------------------

    async def push(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        blobs = [delivery.encode() for delivery in deliveries]
        return int(
            await self._scripts["push"].run(self._client, [self._ready, self._retry], [self._queue_limit, *blobs])
        )

    async def take(self, timeout: float) -> Delivery | None:
        next_retry = int(
            await self._scripts["promote"].run(self._client, [self._retry, self._ready], [now_ms(), SCRIPT_BATCH])
        )
        if next_retry >= 0:
            timeout = min(timeout, max(next_retry - now_ms(), 10) / 1000)
        # BLMOVE's timeout 0 would block for ever; Redis takes fractions of a second since 6.0.
        wait = f"{max(timeout, 0.01):.3f}"
        command = cast(Callable[..., Awaitable[Any]], self._blocking.execute_command)
        raw = await command("BLMOVE", self._ready, self._in_flight, "LEFT", "RIGHT", wait)
        if raw is None:
            return None
        try:
            delivery = Delivery.decode(raw)
        except MalformedRecord as error:
            logger.error("webhooks: dropped a malformed queued delivery: %s", error)
            await self._client.lrem(self._in_flight, 1, cast(Any, raw))
            return None
        self._leases[delivery.id] = raw
        return delivery

    def _lease(self, delivery: Delivery) -> bytes:
        return self._leases.pop(delivery.id, None) or delivery.encode()

    async def ack(self, delivery: Delivery) -> None:
        await self._client.lrem(self._in_flight, 1, cast(Any, self._lease(delivery)))

    async def retry(self, delivery: Delivery, attempt: Delivery, due_ms: int) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lrem(self._in_flight, 1, cast(Any, self._lease(delivery)))
            pipe.zadd(self._retry, {attempt.encode(): due_ms})
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, letter: DeadLetter) -> None:
        dead = self._dead_key(delivery.app_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lrem(self._in_flight, 1, cast(Any, self._lease(delivery)))
            pipe.rpush(dead, letter.encode())
            pipe.ltrim(dead, -self._dead_letter_limit, -1)
            await pipe.execute()

    async def _dead_blobs(self, app_id: str, limit: int) -> list[bytes]:
        return list(await cast(Any, self._client.lrange(self._dead_key(app_id), 0, limit - 1)))

    async def dead_letters(self, app_id: str, limit: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for raw in await self._dead_blobs(app_id, limit):
            with contextlib.suppress(MalformedRecord):
                letters.append(DeadLetter.decode(raw))
        return letters

    async def replay(self, app_id: str, ids: Collection[str] | None) -> int:
        args: list[bytes] = []
        for raw in await self._dead_blobs(app_id, self._dead_letter_limit):
            try:
                letter = DeadLetter.decode(raw)
            except MalformedRecord:
                continue
            if ids is None or letter.delivery.id in ids:
                args += [raw, letter.delivery.replayed().encode()]
        if not args:
            return 0
        return int(await self._scripts["replay"].run(self._client, [self._dead_key(app_id), self._ready], args))

    async def is_drained(self) -> bool:
        return int(await cast(Any, self._client.llen(self._ready))) == 0

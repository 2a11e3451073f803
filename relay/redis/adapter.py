"""RedisAdapter: several relay nodes acting as one server through one Redis.

Broadcaster: one pub/sub channel per (app, channel), subscribed while this node has local subscribers
(subscriptions.py), plus one control channel for TERMINATE_USER; one PUBLISH per event and channel
(publisher.py). On a Redis Cluster (`redis+cluster://` URL) the channels are shard channels (SPUBLISH,
SSUBSCRIBE on the primary serving each channel's slot) and every state key carries the hash tag
`{prefix}`, so each Lua script touches one slot. ClusterState: atomic Lua scripts (state.py), every
call also recorded in this node's share (share.py), which answers while Redis is unreachable and is
written back when it returns.
HistoryStore: recovering channels' histories as Redis Streams, appended by the publish itself, and
departures (docs/recovery.md, "Several nodes"); on a Redis Cluster each history sits in its shard
channel's slot, and departures and positions with the state keys.
The supervisor (supervisor.py) keeps the session to Redis open. Never touches sockets.

Just over 400 lines on purpose: it is the facade of three protocols, each method a short delegation with
its outage fallback beside it; the work is in the modules named above.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from relay.adapters.base import CachedEvent, ClusterListener, Envelope, EnvelopeKind, Position, Recovered
from relay.config import RedisConfig
from relay.metrics import Metrics
from relay.redis.heartbeat import Heartbeat
from relay.redis.link import RedisReplyError, RedisUnavailable, check_url, describe
from relay.redis.publisher import QUEUE_LIMIT, Publisher
from relay.redis.scripts import load_scripts
from relay.redis.session import Session
from relay.redis.share import NodeShare
from relay.redis.state import NodeEvicted, RedisClusterState
from relay.redis.subscriptions import Subscriptions
from relay.redis.supervisor import Supervisor
from relay.redis.topology import history_key, is_cluster_url, key_prefix
from relay.redis.wire import KEPT_VERSION, NO_TOKEN, TOKEN_SLICE, decode_envelope, encode_envelope, split_kept

logger = logging.getLogger(__name__)

T = TypeVar("T")
UNWRITTEN_LIMIT: Final = 10_000


class RedisAdapter:
    """Broadcaster, ClusterState and HistoryStore over Redis, for one node.

    While Redis is unreachable the node keeps serving its own clients: publish() still delivers
    locally and queues for Redis (bounded, oldest dropped), and ClusterState calls answer from this
    node's share instead of failing.
    """

    completes_synchronously = False  # its calls wait for Redis, under asyncio.timeout()

    def __init__(
        self,
        config: RedisConfig,
        node_id: str | None = None,
        *,
        queue_limit: int = QUEUE_LIMIT,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        check_url(config.url)
        self.config = config
        heartbeat = heartbeat or Heartbeat(config, node_id)
        self.node_id = heartbeat.node_id
        self.address = describe(config.url)
        self.received = 0  # envelopes received from other nodes
        self.reply_errors = 0  # error replies from Redis (out of memory, a script error)

        self._prefix = config.prefix  # of pub/sub channels: on a Redis Cluster they spread over the shards
        keys = key_prefix(config.url, config.prefix)  # of state keys: one hash tag on a Redis Cluster
        self._sharded = is_cluster_url(config.url)
        self._token = secrets.token_bytes(8)  # marks what this process publishes
        self._control = f"{self._prefix}:control".encode()
        self._share = NodeShare()
        # Recovery writes (positions, departures) made while Redis is away, oldest dropped beyond the bound.
        self._unwritten: collections.deque[Callable[[RedisClusterState], None]] = collections.deque(
            maxlen=UNWRITTEN_LIMIT
        )
        self._listener: ClusterListener | None = None
        self._last_reply_error_log = 0.0
        if self._sharded and ("{" in config.prefix or "}" in config.prefix):
            # A brace would make Redis hash part of a shard channel's name, and its history key another slot.
            raise ValueError("on a Redis Cluster the Redis prefix must not contain '{' or '}'")
        scripts = load_scripts("cluster")
        # Flagged for a Redis Cluster (allow-cross-slot-keys), which Redis before 7 refuses: not loaded elsewhere.
        shard_scripts = (load_scripts("sharded")["spublish"], scripts.pop("spublish_kept"))
        self._subscriptions = Subscriptions(self._control, self._current, self._on_message, self._lose)
        self._publisher = Publisher(
            keys, scripts, shard_scripts, self._current, self._reply_error, self._deliver_here, self._token, queue_limit
        )
        self._supervisor = Supervisor(
            config.url,
            self.address,
            keys,
            heartbeat,
            scripts,
            self._share,
            self._subscriptions,
            self._publisher,
        )

    def register_metrics(self, metrics: Metrics) -> None:
        """relay_redis_* at /metrics; outages and returns also go to the operators' alerts."""
        self._supervisor.alerts = metrics.alerts
        metrics.add_gauge(
            "relay_redis_connected", "1 while this node has Redis", (), lambda: [((), float(self.connected))]
        )
        metrics.add_gauge(
            "relay_redis_publish_queue", "Publishes waiting for Redis", (), lambda: [((), self._publisher.queued)]
        )
        for name, documentation, read in (
            ("relay_redis_outages", "Times this node lost Redis", lambda: self.outages),
            ("relay_redis_reconnects", "Times Redis came back after an outage", lambda: self.reconnects),
            ("relay_redis_evictions", "Times this node was presumed dead by the others", lambda: self.evictions),
            (
                "relay_redis_publishes_dropped",
                "Publishes dropped because the queue for Redis was full",
                lambda: self.dropped_publishes,
            ),
            ("relay_redis_publishes_sent", "Publishes sent to Redis", lambda: self.published),
            ("relay_redis_envelopes_received", "Envelopes received from Redis", lambda: self.received),
        ):
            metrics.add_total(name, documentation, read)

    @property
    def outages(self) -> int:
        """Times a working connection to Redis was lost."""
        return self._supervisor.outages

    @property
    def reconnects(self) -> int:
        """Times Redis came back after an outage."""
        return self._supervisor.reconnects

    @property
    def evictions(self) -> int:
        """Times this node was presumed dead (heartbeat expired) while running."""
        return self._supervisor.evictions

    @property
    def dropped_publishes(self) -> int:
        return self._publisher.dropped

    @property
    def published(self) -> int:
        return self._publisher.published

    @property
    def cluster(self) -> RedisClusterState | None:
        """The current session's cluster state, None while Redis is unreachable."""
        session = self._supervisor.session
        return None if session is None else session.cluster

    # Life cycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._supervisor.session is not None

    async def start(self, listener: ClusterListener) -> None:
        """Connect (waiting at most a few seconds) and keep the connection up in the background."""
        self._listener = listener
        self._supervisor.listener = listener
        await self._supervisor.start()
        if not self.connected:
            logger.warning(
                "Redis at %s is unreachable at start; node %s serves its local clients only until it answers",
                self.address,
                self.node_id,
            )

    async def close(self, *, graceful: bool = True) -> None:
        """Stop every background activity and close the links.

        Graceful: end this node's heartbeat and remove what it still holds, reporting members and
        channels lost through the listener (so member_removed still goes out), then wait until
        Redis has every queued publish. graceful=False leaves everything in Redis, as a crash would
        (tests use it to play a dead node): what it wrote is swept by the other nodes once the node's
        liveness record expires, or, when the node lives on through its webhook store, at the next sweep
        (its incarnation is over).
        """
        await self._supervisor.stop(graceful=graceful)
        self._subscriptions.fail_barriers(RedisUnavailable("adapter closed"))
        self._listener = None
        self._supervisor.listener = None

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once Redis is reachable (or, with False, once it is not)."""
        await (self._supervisor.up if connected else self._supervisor.down).wait()

    async def settle(self) -> None:
        """Return once Redis has confirmed every SUBSCRIBE and UNSUBSCRIBE asked for so far.

        channel_occupied_locally() subscribes in the background; a test or benchmark that needs
        another node's next publish to arrive here awaits this first.
        """
        while True:
            await self._supervisor.up.wait()
            try:
                await self._subscriptions.barrier()
                return
            except RedisUnavailable:
                continue

    def _current(self) -> Session | None:
        return self._supervisor.session

    def _lose(self, session: Session, error: BaseException) -> None:
        self._supervisor.lose(session, error)

    # Broadcaster -----------------------------------------------------------------------------

    def _channel_name(self, app_id: str, channel: str) -> bytes:
        return f"{self._prefix}:ev:{app_id}:{channel}".encode()

    def publish(self, envelope: Envelope) -> None:
        """Queue one PUBLISH for Redis, then deliver to this node at once (never waits on Redis).

        An event of a recovering channel (`retention`) is kept in the channel's history by the same script
        that publishes it, and while Redis is reachable this node delivers it, as every other, when Redis
        publishes it with its id: one order for history and delivery on every node."""
        if envelope.kind is EnvelopeKind.TERMINATE_USER:
            name = self._control
        else:
            name = self._channel_name(envelope.app_id, envelope.channel)
        retention = envelope.retention
        if retention is None:
            self._publisher.enqueue((name, encode_envelope(envelope, self._token) + envelope.frame))
        elif self._supervisor.session is not None and not self._subscriptions.awaits_confirmation(name):
            payload = encode_envelope(envelope, NO_TOKEN) + envelope.frame
            self._publisher.enqueue(
                (name, payload, envelope.app_id, envelope.channel, retention.max_events, retention.ttl_ms)
            )
            return
        else:
            # Redis is away, or has not confirmed this node's subscription yet (just back): delivered here now,
            # without an id; kept and numbered by Redis all the same, and not delivered here again.
            payload = encode_envelope(envelope, self._token) + envelope.frame
            self._publisher.enqueue(
                (name, payload, envelope.app_id, envelope.channel, retention.max_events, retention.ttl_ms)
            )
        if self._listener is not None:
            self._listener.deliver(envelope)

    def _deliver_here(self, payload: bytes) -> None:
        """A kept event the publisher could not get numbered by Redis: delivered here without an id."""
        if self._listener is not None:
            self._listener.deliver(decode_envelope(payload))

    def channel_occupied_locally(self, app_id: str, channel: str) -> None:
        self._subscriptions.occupied(self._channel_name(app_id, channel))

    def channel_vacated_locally(self, app_id: str, channel: str) -> None:
        self._subscriptions.vacated(self._channel_name(app_id, channel))

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        try:
            if payload[0] == KEPT_VERSION:
                event_id, payload = split_kept(payload)
                if payload[TOKEN_SLICE] == self._token:
                    return  # ours, delivered here while Redis was away
                envelope = decode_envelope(payload, event_id)
            elif payload[TOKEN_SLICE] == self._token:
                return  # ours: delivered locally when published
            else:
                envelope = decode_envelope(payload)
        except (ValueError, struct.error, UnicodeDecodeError, IndexError):
            logger.exception("dropping a malformed message on Redis channel %r", channel)
            return
        self.received += 1
        if self._listener is not None:
            try:
                self._listener.deliver(envelope)
            except Exception:
                logger.exception("delivering from Redis failed for app_id=%s", envelope.app_id)

    # ClusterState ----------------------------------------------------------------------------

    async def _ask(self, call: Callable[[RedisClusterState], Awaitable[T]], local: Callable[[], T]) -> T:
        """The cluster's answer, or the share's (`local()`) when Redis cannot give one now."""
        session = self._supervisor.session
        if session is None:
            return local()
        try:
            return await call(session.cluster)
        except (RedisUnavailable, NodeEvicted) as error:
            self._supervisor.lose(session, error)
            return local()
        except RedisReplyError as error:
            self._reply_error(error)
            return local()

    def _reply_error(self, error: RedisReplyError) -> None:
        self.reply_errors += 1
        now = time.monotonic()
        if now - self._last_reply_error_log > 10:
            self._last_reply_error_log = now
            logger.error("Redis refused a call of node %s (answering locally if it can): %s", self.node_id, error)

    # Writes are recorded in the share first, so that the share is complete whatever Redis says.

    async def add_connection(self, app_id: str, socket_id: str) -> int:
        local = self._share.add_connection(app_id, socket_id)
        return await self._ask(lambda c: c.add_connection(app_id), lambda: local)

    async def remove_connection(self, app_id: str, socket_id: str) -> None:
        self._share.remove_connection(app_id, socket_id)
        await self._ask(lambda c: c.remove_connection(app_id), lambda: None)

    async def add_subscription(self, app_id: str, channel: str, socket_id: str) -> bool:
        local = self._share.add_subscription(app_id, channel, socket_id)
        answer = self._ask(lambda c: c.add_subscription(app_id, channel, socket_id), lambda: local)
        name = self._channel_name(app_id, channel)
        if self._supervisor.session is None or not self._subscriptions.awaits_confirmation(name):
            return await answer
        # The channel is new on this node: answer only once Redis confirmed the SUBSCRIBE too (the
        # two run side by side), so a client told it is subscribed gets every event published after.
        first, _ = await asyncio.gather(answer, self._subscribed())
        return first

    async def _subscribed(self) -> None:
        """Wait (bounded) until Redis confirmed every SUBSCRIBE asked so far; an outage ends the wait."""
        try:
            async with asyncio.timeout(self._supervisor.timeout):
                await self._subscriptions.barrier()
        except (RedisUnavailable, TimeoutError):
            pass

    async def remove_subscription(self, app_id: str, channel: str, socket_id: str) -> bool:
        local = self._share.remove_subscription(app_id, channel, socket_id)
        return await self._ask(lambda c: c.remove_subscription(app_id, channel, socket_id), lambda: local)

    async def add_member(self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any) -> bool:
        local = self._share.add_member(app_id, channel, socket_id, user_id, user_info)
        return await self._ask(lambda c: c.add_member(app_id, channel, socket_id, user_id, user_info), lambda: local)

    async def remove_member(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        local = self._share.remove_member(app_id, channel, socket_id, user_id)
        return await self._ask(lambda c: c.remove_member(app_id, channel, socket_id, user_id), lambda: local)

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        share = self._share
        return await self._ask(lambda c: c.members(app_id, channel), lambda: share.members(app_id, channel))

    async def member_count(self, app_id: str, channel: str) -> int:
        share = self._share
        return await self._ask(lambda c: c.member_count(app_id, channel), lambda: share.member_count(app_id, channel))

    async def subscription_count(self, app_id: str, channel: str) -> int:
        share = self._share
        return await self._ask(
            lambda c: c.subscription_count(app_id, channel), lambda: share.subscription_count(app_id, channel)
        )

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        share = self._share
        return await self._ask(lambda c: c.channels(app_id, prefix), lambda: share.channels(app_id, prefix))

    async def set_cache(self, app_id: str, channel: str, cached: CachedEvent) -> None:
        await self._ask(lambda c: c.set_cache(app_id, channel, cached), lambda: None)
        if self._supervisor.session is None:  # not stored in Redis: answer it locally until Redis returns
            self._share.set_cache(app_id, channel, cached)

    async def get_cache(self, app_id: str, channel: str) -> CachedEvent | None:
        share = self._share
        return await self._ask(lambda c: c.get_cache(app_id, channel), lambda: share.get_cache(app_id, channel))

    # HistoryStore ----------------------------------------------------------------------------

    @property
    def shares_histories(self) -> bool:
        return True  # on one Redis and on a Redis Cluster alike

    @property
    def keeps_history(self) -> bool:
        return self._supervisor.session is not None

    # The writes are queued while Redis is away (bounded, oldest dropped) and sent before the next recovery
    # call once it is back, so a connection that ended meanwhile does not leave its position behind.

    def record_position(self, app_id: str, channel: str, user_id: str, position: Position, ttl_ms: int) -> None:
        self._write(lambda c: c.record_position(app_id, channel, user_id, position, ttl_ms))

    def forget_position(self, app_id: str, channel: str, user_id: str, socket_id: str) -> None:
        self._write(lambda c: c.forget_position(app_id, channel, user_id, socket_id))

    def record_departure(self, app_id: str, channel: str, user_id: str, position: Position, ttl_ms: int) -> None:
        self._write(lambda c: c.depart(app_id, channel, user_id, position, ttl_ms))

    async def recover(
        self, app_id: str, channel: str, user_id: str, socket_id: str, window_ms: int, fallback: Position | None
    ) -> Recovered | None:
        self._write_back()
        session = self._supervisor.session
        if session is None or session.slot_map is None:
            return await self._ask(
                lambda c: c.recover(app_id, channel, user_id, socket_id, window_ms, fallback), lambda: None
            )
        # A Redis Cluster: where the user left (state shard), then the history (the channel's shard). The
        # connection's live events stay held back until both are answered, as on one Redis: the history's
        # newest id is read with the events, on the shard that numbers and publishes them.
        name = self._channel_name(app_id, channel)
        link = session.histories[session.shard(name)]

        async def recover(cluster: RedisClusterState) -> Recovered:
            left = await cluster.left(app_id, channel, user_id, socket_id, fallback)
            return await cluster.history_after(link, history_key(name), window_ms, left)

        return await self._ask(recover, lambda: None)

    def _write(self, write: Callable[[RedisClusterState], None]) -> None:
        self._unwritten.append(write)
        self._write_back()

    def _write_back(self) -> None:
        session = self._supervisor.session
        if session is not None:
            while self._unwritten:  # queued on the link in order, ahead of whatever is asked next
                self._unwritten.popleft()(session.cluster)

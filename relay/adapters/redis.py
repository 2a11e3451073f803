"""RedisAdapter: several relay nodes acting as one server through one Redis, on redis-py's asyncio client.

Fan-out is Redis pub/sub, one pub/sub channel per (app, channel) that a node SUBSCRIBEs to only
while it has local subscribers, plus one control channel for TERMINATE_USER; one PUBLISH per event
and channel, whatever the number of subscribers. Cluster state lives in Redis behind atomic Lua
scripts (redis_state.py). Every call is also recorded in this node's share (share.py), which answers
while Redis is unreachable and is written back when it returns.

Three links per session (redis_link.py), each one redis-py connection (hiredis parses replies when it is
installed; it is not a dependency yet: with it, the webhooks RedisStore tests hang at teardown in about half
the runs, a cancelled blocking command in that store, so the figures below, measured with hiredis, are
the receiving side's best case; without it a receiver flooded at 60k events/s fell behind until Redis
dropped it as a slow subscriber, which the adapter handles as an outage):
cluster state (the commands of one loop iteration as one pipeline), PUBLISH (what is queued goes out
as calls of lua/publish.lua, 500 envelopes each, one pipeline per round trip) and a PubSub read by one
task. Speed against the home-made RESP client this replaced, as events per CPU-second of one node
process (what decides how many events a node can move; wall-clock figures on the shared 2-core machine
swung by 2x between runs), asyncio loop, 300,000 events of 140 bytes: publishing 109k-128k (RESP client
131k-158k, so about 20 % slower), receiving 103k-118k (RESP client 82k-112k). A plain pipeline of
PUBLISH commands reached only about half of the publishing figure. Cluster-state Lua calls: about
31k per CPU-second from 200 concurrent callers (RESP client 21k-31k), but a lone caller awaiting one
call at a time costs twice the CPU (3.5k vs 5k-7k per CPU-second): redis-py's pipeline machinery per
round trip. The RESP client also never connected under uvloop, relay's default loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError, RedisError

from relay.adapters.base import CachedEvent, ClusterListener, Envelope, EnvelopeKind
from relay.adapters.redis_link import (
    Command,
    PipelinedLink,
    RedisReplyError,
    RedisUnavailable,
    check_url,
    describe,
    open_pubsub,
)
from relay.adapters.redis_state import NodeEvicted, RedisClusterState, load_scripts
from relay.adapters.share import NodeShare
from relay.alerts import AlertKind, Alerts
from relay.config import RedisConfig
from relay.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_MIN: Final = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX: Final = 5.0
QUEUE_LIMIT: Final = 100_000  # PUBLISH commands waiting for Redis; the oldest are dropped beyond this
SWEEP_BUDGET: Final = 1000  # dead nodes' entries removed per script call
SUBSCRIBE_BATCH: Final = 1000  # channels per SUBSCRIBE/UNSUBSCRIBE command
OUTBOX_BATCH: Final = 10_000  # envelopes per pipeline
PUBLISH_SCRIPT_BATCH: Final = 500  # envelopes per call of lua/publish.lua, so one call never holds Redis long

# Envelope on the wire: version, kind, publisher token, four lengths, then app_id, channel,
# except_socket_id, user_id and the frame, untouched. The token sits at a fixed offset so a node
# skips its own messages without decoding them.
_WIRE_VERSION: Final = 1
_HEADER: Final = struct.Struct("!BB8sHHHH")
_TOKEN_SLICE: Final = slice(2, 10)


def encode_envelope(envelope: Envelope, token: bytes) -> bytes:
    """The header plus the frame; only the header is built here, the frame is appended as is."""
    app = envelope.app_id.encode()
    channel = envelope.channel.encode()
    skip = envelope.except_socket_id.encode()
    user = envelope.user_id.encode()
    head = _HEADER.pack(_WIRE_VERSION, envelope.kind, token, len(app), len(channel), len(skip), len(user))
    return b"".join((head, app, channel, skip, user))


def decode_envelope(payload: bytes) -> Envelope:
    version, kind, _, app_len, channel_len, skip_len, user_len = _HEADER.unpack_from(payload)
    if version != _WIRE_VERSION:
        raise ValueError(f"unknown envelope version {version}")
    pos = _HEADER.size
    app = payload[pos : pos + app_len].decode()
    pos += app_len
    channel = payload[pos : pos + channel_len].decode()
    pos += channel_len
    skip = payload[pos : pos + skip_len].decode()
    pos += skip_len
    user = payload[pos : pos + user_len].decode()
    pos += user_len
    return Envelope(EnvelopeKind(kind), app, channel, payload[pos:], skip, user)


class _Session:
    """The links of one connection to Redis and the tasks that serve them; replaced after every outage."""

    def __init__(
        self, cluster: RedisClusterState, publisher: PipelinedLink, pubsub_client: Redis, pubsub: PubSub
    ) -> None:
        self.cluster = cluster
        self.publisher = publisher
        self.pubsub_client = pubsub_client
        self.pubsub = pubsub
        self.pubsub_commands: collections.deque[tuple[bytes, ...]] = collections.deque()  # SUBSCRIBE, UNSUBSCRIBE, PING
        self.pubsub_wake = asyncio.Event()
        self.publish_wake = asyncio.Event()
        self.publish_idle = asyncio.Event()  # set while no PUBLISH is queued or in flight
        self.publish_idle.set()
        self.tasks: list[asyncio.Task[None]] = []

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.cluster.link.close()
        await self.publisher.close()
        for close in (self.pubsub.aclose, self.pubsub_client.aclose):
            try:
                await close()
            except Exception as error:  # the link is gone already; nothing to do about it
                logger.debug("closing the pub/sub link: %r", error)


class RedisAdapter:
    """Broadcaster and ClusterState over Redis, for one node.

    While Redis is unreachable the node keeps serving its own clients: publish() still delivers
    locally and queues for Redis (bounded, oldest dropped), and ClusterState calls answer from this
    node's share instead of failing. Reconnection backs off from 0.1 s to 5 s; when it succeeds
    the node registers as a new incarnation, writes its share back, re-subscribes, flushes the
    queue, and sweeps what its previous incarnation held but no longer does.
    """

    def __init__(self, config: RedisConfig, node_id: str | None = None, *, queue_limit: int = QUEUE_LIMIT) -> None:
        check_url(config.url)
        self.config = config
        self.node_id = node_id or secrets.token_hex(6)
        self.address = describe(config.url)
        # Counters, read by metrics and tests.
        self.outages = 0  # times a working connection to Redis was lost
        self.reconnects = 0  # times it came back after one
        self._alerts = Alerts((), 0.0)  # replaced by register_metrics
        self.evictions = 0  # times this node was presumed dead (heartbeat expired) while running
        self.dropped_publishes = 0  # envelopes dropped from a full queue while Redis was slow or away
        self.published = 0  # PUBLISH commands sent to Redis
        self.received = 0  # envelopes received from other nodes
        self.reply_errors = 0  # error replies from Redis (out of memory, a script error)

        self._url = config.url
        self._prefix = config.prefix
        self._heartbeat_ttl = config.node_timeout
        self._interval = config.node_timeout / 3
        self._timeout = max(1.0, min(5.0, self._interval))  # per request and per connect
        self._queue_limit = queue_limit
        self._token = secrets.token_bytes(8)  # marks what this process publishes
        self._scripts = load_scripts()
        self._share = NodeShare()
        self._listener: ClusterListener | None = None
        self._supervisor: asyncio.Task[None] | None = None

        # The current session; None while Redis is unreachable (calls then go to the share).
        self._session: _Session | None = None
        self._live: _Session | None = None  # the session whose links are open, until it is closed
        self._incarnation = 0
        self._owner: str | None = None  # the incarnation registered by the current session
        self._retired: list[str] = []  # earlier owners whose leftovers still need sweeping
        self._session_up = False
        self._session_error: BaseException | None = None
        self._broken = asyncio.Event()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._down_since: float | None = None
        self._first_attempt: asyncio.Future[None] | None = None

        self._outbox: collections.deque[tuple[bytes, bytes]] = collections.deque()  # (channel, payload)
        self._dropping = False

        self._control = f"{self._prefix}:control".encode()
        self._desired: set[bytes] = {self._control}
        self._active: set[bytes] = set()  # asked of Redis in this session
        self._confirmed: set[bytes] = set()  # confirmed by Redis in this session
        self._changes: dict[bytes, bool] = {}
        self._subscriptions_scheduled = False
        self._barrier_seq = 0
        self._barriers: list[tuple[int, asyncio.Future[None]]] = []
        self._last_pong = 0.0
        self._last_reply_error_log = 0.0

    def register_metrics(self, metrics: Metrics) -> None:
        """relay_redis_* at /metrics; outages and returns also go to the operators' alerts."""
        self._alerts = metrics.alerts
        metrics.add_gauge(
            "relay_redis_connected", "1 while this node has Redis", (), lambda: [((), float(self.connected))]
        )
        metrics.add_gauge(
            "relay_redis_publish_queue", "Publishes waiting for Redis", (), lambda: [((), len(self._outbox))]
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

    # Life cycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def start(self, listener: ClusterListener) -> None:
        """Connect (waiting at most a few seconds) and keep the connection up in the background."""
        self._listener = listener
        self._first_attempt = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"relay-redis-{self.node_id}")
        try:
            async with asyncio.timeout(self._timeout * 2):
                await asyncio.shield(self._first_attempt)
        except TimeoutError:
            pass
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
        (tests use it to play a dead node).
        """
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        session = self._session
        if graceful and session is not None:
            try:
                async with asyncio.timeout(self._timeout * 2):
                    await session.cluster.end_heartbeat()
                    await self._sweep(session.cluster, skip_owner="")
                    await self._publishes_sent(session)
            except (RedisUnavailable, RedisReplyError, TimeoutError) as error:
                logger.warning("node %s could not remove its entries from Redis on close: %r", self.node_id, error)
        self._session = None
        live, self._live = self._live, None
        if live is not None:
            await live.close()
        self._fail_barriers(RedisUnavailable("adapter closed"))
        self._listener = None

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once Redis is reachable (or, with False, once it is not)."""
        await (self._up if connected else self._down).wait()

    async def settle(self) -> None:
        """Return once Redis has confirmed every SUBSCRIBE and UNSUBSCRIBE asked for so far.

        channel_occupied_locally() subscribes in the background; a test or benchmark that needs
        another node's next publish to arrive here awaits this first.
        """
        while True:
            await self._up.wait()
            try:
                await self._barrier()
                return
            except RedisUnavailable:
                continue

    # Session supervision ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, keep alive, and reconnect with backoff for as long as the adapter runs."""
        delay = BACKOFF_MIN
        while True:
            evicted = False
            error: BaseException | None = None
            try:
                await self._open_session()
                self._first_attempt_done()
                delay = BACKOFF_MIN
                await self._keep_alive()
            except NodeEvicted as caught:
                evicted, error = True, caught
            except (RedisUnavailable, RedisError, OSError, TimeoutError) as caught:
                error = caught
            except Exception as caught:
                # A bug or an unexpected reply: log it, treat it like an outage, and carry on.
                logger.exception("Redis session of node %s failed", self.node_id)
                error = caught
            self._first_attempt_done()
            await self._end_session(error, evicted)
            if evicted:
                continue  # re-register at once: the cluster already thinks we are gone
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    def _first_attempt_done(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _open_session(self) -> None:
        name = f"relay-{self.node_id}"
        state_link = await PipelinedLink.open(self._url, f"{name}-state", self._timeout)
        links: list[PipelinedLink] = [state_link]
        try:
            publisher = await PipelinedLink.open(self._url, f"{name}-publish", self._timeout)
            links.append(publisher)
            pubsub_client, pubsub = await open_pubsub(self._url, f"{name}-subscribe", self._timeout, self._control)
        except BaseException:
            for link in links:
                await link.close()
            raise
        self._incarnation += 1
        cluster = RedisClusterState(state_link, self._prefix, f"{self.node_id}.{self._incarnation}", self._scripts)
        session = _Session(cluster, publisher, pubsub_client, pubsub)
        self._live = session  # closed by _end_session or close(), whatever happens next
        for link in links:
            link.on_lost = self._on_link_lost

        # From the snapshot to `self._session = session` nothing yields: calls made before it are in
        # the re-write, calls made after it run in Redis after the re-write (same link, in order).
        snapshot = self._listener.local_snapshot() if self._listener is not None else None
        entries = self._share.entries(snapshot)
        retired = list(self._retired)
        done = cluster.start_session(self._heartbeat_ttl, entries, retired)
        self._owner = cluster.owner
        self._session = session
        self._session_up = True
        self._share.forget_cache()
        self._last_pong = asyncio.get_running_loop().time()
        self._active = {self._control}
        self._confirmed = {self._control}
        self._changes = dict.fromkeys(self._desired, True)
        session.tasks += [
            asyncio.create_task(self._read_pubsub(session), name=f"{name}-pubsub-reader"),
            asyncio.create_task(self._write_pubsub(session), name=f"{name}-pubsub-writer"),
            asyncio.create_task(self._send_publishes(session), name=f"{name}-publisher"),
        ]
        self._flush_subscriptions()
        session.publish_wake.set()
        self._up.set()
        self._down.clear()

        await done
        del self._retired[: len(retired)]
        await self._sweep(cluster)  # what the retired incarnations held and the node no longer does
        if self._down_since is not None:
            outage = time.monotonic() - self._down_since
            logger.info(
                "Redis at %s is reachable again after %.1fs; node %s re-wrote %d subscriptions and %d presence entries",
                self.address,
                outage,
                self.node_id,
                len(entries.subscriptions),
                len(entries.memberships),
            )
            self._down_since = None
            if self.outages:
                self.reconnects += 1
                self._alerts.raise_alert(
                    AlertKind.REDIS_RECOVERED,
                    f"Redis at {self.address} is back after {outage:.1f} s (node {self.node_id})",
                )

    async def _keep_alive(self) -> None:
        """Heartbeat, sweep dead nodes and watch the pub/sub link until the session breaks."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(self._interval):
                    await self._broken.wait()
            except TimeoutError:
                pass
            else:
                raise self._session_error or RedisUnavailable("link to Redis lost")
            session = self._session
            if session is None:
                raise RedisUnavailable("link to Redis lost")
            await session.cluster.refresh(self._heartbeat_ttl)
            if loop.time() - self._last_pong > self._interval * 2 + self._timeout:
                raise RedisUnavailable("the pub/sub link stopped answering PING")
            self._pubsub_command(session, (b"PING", b"alive"))
            await self._sweep(session.cluster)

    async def _sweep(self, cluster: RedisClusterState, skip_owner: str | None = None) -> None:
        """Remove dead owners' entries and report what vanished with them (exactly once cluster-wide)."""
        while True:
            result = await cluster.sweep(SWEEP_BUDGET, skip_owner)
            listener = self._listener
            if result.members_lost or result.channels_lost:
                self._alerts.raise_alert(
                    AlertKind.NODE_PRESUMED_DEAD,
                    f"a relay node stopped its heartbeat and was presumed dead; node {self.node_id} removed "
                    f"{len(result.members_lost)} presence members and {len(result.channels_lost)} channels it held",
                )
            for app_id, channel, user_id in result.members_lost:
                logger.info("member user_id=%s of app_id=%s channel=%s left with a dead node", user_id, app_id, channel)
                if listener is not None:
                    try:
                        listener.member_lost(app_id, channel, user_id)
                    except Exception:
                        logger.exception("member_lost failed for app_id=%s channel=%s", app_id, channel)
            for app_id, channel in result.channels_lost:
                if listener is not None:
                    try:
                        listener.channel_lost(app_id, channel)
                    except Exception:
                        logger.exception("channel_lost failed for app_id=%s channel=%s", app_id, channel)
            if not result.more:
                return

    def _on_link_lost(self, error: BaseException) -> None:
        self._lose_session(error)

    def _lose_session(self, error: BaseException) -> None:
        """Route calls to the share from now on and wake the supervisor to reconnect."""
        if self._session is None:
            return
        self._session = None
        self._up.clear()
        self._down.set()
        self._session_error = error
        self._broken.set()

    async def _end_session(self, error: BaseException | None, evicted: bool) -> None:
        was_up = self._session_up
        self._session_up = False
        if self._owner is not None:
            self._retired.append(self._owner)
            self._owner = None
        self._session = None
        self._up.clear()
        self._down.set()
        self._active.clear()
        self._confirmed.clear()
        self._fail_barriers(RedisUnavailable("link to Redis lost"))
        self._broken.clear()
        self._session_error = None
        if evicted:
            self.evictions += 1
            logger.warning("node %s was presumed dead by the cluster (heartbeat expired); re-registering", self.node_id)
            self._alerts.raise_alert(
                AlertKind.NODE_PRESUMED_DEAD, f"node {self.node_id} was presumed dead by the cluster and re-registered"
            )
        elif was_up:
            self.outages += 1
            self._down_since = time.monotonic()
            self._dropping = False
            logger.warning(
                "lost Redis at %s (%r); node %s keeps serving its local clients and reconnects",
                self.address,
                error,
                self.node_id,
            )
            self._alerts.raise_alert(
                AlertKind.REDIS_LOST,
                f"lost Redis at {self.address}; node {self.node_id} serves its own clients only until it is back",
            )
        elif error is not None:
            logger.debug("Redis at %s still unreachable: %r", self.address, error)
        if self._down_since is None:
            self._down_since = time.monotonic()
        live, self._live = self._live, None
        if live is not None:
            await live.close()

    # Broadcaster -----------------------------------------------------------------------------

    def _channel_name(self, app_id: str, channel: str) -> bytes:
        return f"{self._prefix}:ev:{app_id}:{channel}".encode()

    def publish(self, envelope: Envelope) -> None:
        """Queue one PUBLISH for Redis, then deliver to this node at once (never waits on Redis)."""
        if envelope.kind is EnvelopeKind.TERMINATE_USER:
            name = self._control
        else:
            name = self._channel_name(envelope.app_id, envelope.channel)
        outbox = self._outbox
        if len(outbox) >= self._queue_limit:
            outbox.popleft()
            self.dropped_publishes += 1
            if not self._dropping:
                self._dropping = True
                logger.warning("publish queue for Redis is full (%d); dropping the oldest", self._queue_limit)
        outbox.append((name, encode_envelope(envelope, self._token) + envelope.frame))
        session = self._session
        if session is not None:
            session.publish_idle.clear()
            session.publish_wake.set()
        if self._listener is not None:
            self._listener.deliver(envelope)

    async def _send_publishes(self, session: _Session) -> None:
        """The session's publisher: everything queued goes out as pipelines of PUBLISH, in order.

        One pipeline in flight at a time, so the queue (bounded) is what absorbs a slow Redis.
        A pipeline lost with the link is not re-sent: at most once, never duplicated.
        """
        outbox = self._outbox
        script = self._scripts["publish"]
        while True:
            await session.publish_wake.wait()
            session.publish_wake.clear()
            while outbox:
                count = min(len(outbox), OUTBOX_BATCH)
                commands: list[Command] = []
                for start in range(0, count, PUBLISH_SCRIPT_BATCH):
                    args: list[bytes | str | int] = [b"EVALSHA", script.sha, 0, self._prefix]
                    for _ in range(min(PUBLISH_SCRIPT_BATCH, count - start)):
                        args += outbox.popleft()
                    commands.append(tuple(args))
                try:
                    replies = await session.publisher.execute(commands)
                    if any(isinstance(reply, NoScriptError) for reply in replies):
                        # The session's SCRIPT LOAD (state link) had not run yet: send the source once.
                        retry = [(b"EVAL", script.source, *command[2:]) for command in commands]
                        replies = await session.publisher.execute(retry)
                except RedisUnavailable:
                    return  # on_lost ends the session
                for reply in replies:
                    if isinstance(reply, RedisReplyError):
                        self._reply_error(reply)
                self.published += count
            self._dropping = False
            session.publish_idle.set()

    async def _publishes_sent(self, session: _Session) -> None:
        """Return once Redis has every PUBLISH queued so far (graceful close)."""
        while self._outbox or not session.publish_idle.is_set():
            if not session.publisher.is_open:
                raise RedisUnavailable("publish link to Redis lost")
            session.publish_idle.clear()  # a set Event would not yield: the publisher must run first
            session.publish_wake.set()
            await session.publish_idle.wait()

    def channel_occupied_locally(self, app_id: str, channel: str) -> None:
        name = self._channel_name(app_id, channel)
        self._desired.add(name)
        self._changes[name] = True
        self._schedule_subscriptions()

    def channel_vacated_locally(self, app_id: str, channel: str) -> None:
        name = self._channel_name(app_id, channel)
        self._desired.discard(name)
        self._changes[name] = False
        self._schedule_subscriptions()

    def _schedule_subscriptions(self) -> None:
        if not self._subscriptions_scheduled and self._session is not None:
            self._subscriptions_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_subscriptions)

    def _flush_subscriptions(self) -> None:
        """Queue the SUBSCRIBE/UNSUBSCRIBE that the changes since the last flush still need.

        A channel vacated and re-occupied in between costs nothing.
        """
        self._subscriptions_scheduled = False
        session = self._session
        if session is None or not self._changes:
            return  # the next session subscribes to everything desired
        changes, self._changes = self._changes, {}
        active = self._active
        add = [name for name, wanted in changes.items() if wanted and name not in active]
        remove = [name for name, wanted in changes.items() if not wanted and name in active]
        for verb, names in ((b"SUBSCRIBE", add), (b"UNSUBSCRIBE", remove)):
            for start in range(0, len(names), SUBSCRIBE_BATCH):
                self._pubsub_command(session, (verb, *names[start : start + SUBSCRIBE_BATCH]))
        active.update(add)
        active.difference_update(remove)

    @staticmethod
    def _pubsub_command(session: _Session, command: tuple[bytes, ...]) -> None:
        session.pubsub_commands.append(command)
        session.pubsub_wake.set()

    async def _write_pubsub(self, session: _Session) -> None:
        """Send SUBSCRIBE, UNSUBSCRIBE and PING on the pub/sub link, one at a time, in order."""
        pubsub, commands = session.pubsub, session.pubsub_commands
        try:
            while True:
                await session.pubsub_wake.wait()
                session.pubsub_wake.clear()
                while commands:
                    verb, *args = commands.popleft()
                    if verb == b"SUBSCRIBE":
                        await pubsub.subscribe(*args)
                    elif verb == b"UNSUBSCRIBE":
                        await pubsub.unsubscribe(*args)
                    else:
                        await pubsub.ping(*args)
        except (RedisError, OSError, TimeoutError) as error:
            self._lose_if_current(session, RedisUnavailable(f"pub/sub link to Redis failed: {error!r}"))

    async def _read_pubsub(self, session: _Session) -> None:
        """The session's reader: every message, (un)subscribe confirmation and PING answer.

        Reads the PubSub's connection directly and hands only what is not a message to
        `PubSub.handle_message` (which keeps redis-py's subscription bookkeeping): `get_message`
        costs a retry wrapper, a dict and several awaits per message, a third of our throughput.
        """
        pubsub = session.pubsub
        connection = pubsub.connection
        try:
            if connection is None:
                raise RedisUnavailable("pub/sub link has no connection")
            while True:
                reply = await connection.read_response(timeout=math.inf, disconnect_on_error=False)
                if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                    self._on_message(reply[1], reply[2])
                    continue
                message = await pubsub.handle_message(reply)
                kind = None if message is None else message["type"]
                if kind == "pong":
                    self._on_pong(message["data"])
                elif kind == "subscribe":
                    self._confirmed.add(message["channel"])
                elif kind == "unsubscribe":
                    self._confirmed.discard(message["channel"])
        except (RedisError, RedisUnavailable, OSError, TimeoutError) as error:
            self._lose_if_current(session, RedisUnavailable(f"pub/sub link to Redis failed: {error!r}"))
        except Exception as error:
            logger.exception("reading the pub/sub link of node %s failed", self.node_id)
            self._lose_if_current(session, error)

    def _lose_if_current(self, session: _Session, error: BaseException) -> None:
        if self._session is session:
            self._lose_session(error)

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        if payload[_TOKEN_SLICE] == self._token:
            return  # ours: delivered locally when published
        try:
            envelope = decode_envelope(payload)
        except (ValueError, struct.error, UnicodeDecodeError):
            logger.exception("dropping a malformed message on Redis channel %r", channel)
            return
        self.received += 1
        if self._listener is not None:
            try:
                self._listener.deliver(envelope)
            except Exception:
                logger.exception("delivering from Redis failed for app_id=%s", envelope.app_id)

    def _on_pong(self, arg: object) -> None:
        self._last_pong = asyncio.get_running_loop().time()
        if isinstance(arg, bytes) and arg.startswith(b"barrier:"):
            self._release_barriers(int(arg[8:]))

    async def _barrier(self) -> None:
        """Await a PING sent after every pending subscription change on the pub/sub link."""
        self._flush_subscriptions()
        session = self._session
        if session is None:
            raise RedisUnavailable("not connected to Redis")
        self._barrier_seq += 1
        seq = self._barrier_seq
        self._pubsub_command(session, (b"PING", b"barrier:%d" % seq))
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append((seq, waiter))
        await waiter

    def _fail_barriers(self, error: BaseException) -> None:
        barriers, self._barriers = self._barriers, []
        for _, waiter in barriers:
            if not waiter.done():
                waiter.set_exception(error)

    def _release_barriers(self, seq: int) -> None:
        remaining = []
        for waiting_seq, waiter in self._barriers:
            if waiting_seq <= seq:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                remaining.append((waiting_seq, waiter))
        self._barriers = remaining

    # ClusterState ----------------------------------------------------------------------------

    async def _ask(self, call: Callable[[RedisClusterState], Awaitable[T]], local: Callable[[], T]) -> T:
        """The cluster's answer, or the share's (`local()`) when Redis cannot give one now."""
        session = self._session
        if session is None:
            return local()
        try:
            return await call(session.cluster)
        except (RedisUnavailable, NodeEvicted) as error:
            if self._session is session:
                self._lose_session(error)
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
        if self._session is None or name not in self._desired or name in self._confirmed:
            return await answer
        # The channel is new on this node: answer only once Redis confirmed the SUBSCRIBE too (the
        # two run side by side), so a client told it is subscribed gets every event published after.
        first, _ = await asyncio.gather(answer, self._subscribed())
        return first

    async def _subscribed(self) -> None:
        """Wait (bounded) until Redis confirmed every SUBSCRIBE asked so far; an outage ends the wait."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._barrier()
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
        if self._session is None:  # not stored in Redis: answer it locally until Redis returns
            self._share.set_cache(app_id, channel, cached)

    async def get_cache(self, app_id: str, channel: str) -> CachedEvent | None:
        share = self._share
        return await self._ask(lambda c: c.get_cache(app_id, channel), lambda: share.get_cache(app_id, channel))

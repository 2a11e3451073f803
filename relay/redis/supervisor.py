"""Supervisor: keeps one session to Redis open for the adapter, and replaces it after every outage.

A session is three links (cluster state, publishing, pub/sub), or on a Redis Cluster a state link plus a
publish link and a pub/sub lane per primary (session.py). When one breaks, calls go to the node's
share at once and reconnection backs off (relay/backoff.py) from 0.1 s to 5 s. A new session registers the
node as a new incarnation (heartbeat.py), writes the share back, re-subscribes, flushes the publish queue,
and sweeps what earlier incarnations held but the node no longer does; then it announces the members the
cluster had lost and this node brought back, and heals its own clients' presence (healing.py). It is a
member of the node's heartbeat: on each beat it checks the pub/sub link answers PING; when the heartbeat
reports nodes lost it sweeps their entries; when it reports this node presumed dead, the session ends and
the next one writes the share back under a new incarnation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final

from redis.exceptions import RedisError

from relay.adapters.base import ClusterListener, LocalSubscription
from relay.alerts import AlertKind, Alerts
from relay.backoff import Backoff, stop_if_cancelled
from relay.redis.healing import PresenceHealer
from relay.redis.heartbeat import Heartbeat
from relay.redis.link import RedisUnavailable
from relay.redis.publisher import Publisher
from relay.redis.scripts import LuaScript
from relay.redis.session import Session, open_links
from relay.redis.share import NodeShare
from relay.redis.state import NodeEvicted, RedisClusterState, Rejoined
from relay.redis.subscriptions import Subscriptions

logger = logging.getLogger(__name__)

BACKOFF_MIN: Final = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX: Final = 4.0  # before jitter: never more than 5 s between attempts
BACKOFF_JITTER: Final = 0.25  # nodes that lost one Redis do not all come back at once
SWEEP_BUDGET: Final = 1000  # dead nodes' entries removed per script call


class Supervisor:
    def __init__(
        self,
        url: str,
        address: str,
        prefix: str,
        heartbeat: Heartbeat,
        scripts: dict[str, LuaScript],
        share: NodeShare,
        subscriptions: Subscriptions,
        publisher: Publisher,
    ) -> None:
        self.node_id = heartbeat.node_id
        self.address = address  # for logs
        self.listener: ClusterListener | None = None
        self.alerts = Alerts((), 0.0)  # the operators' alerts, once the adapter registers its metrics
        self.outages = 0  # times a working connection to Redis was lost
        self.reconnects = 0  # times it came back after one
        self.evictions = 0  # times this node was presumed dead (heartbeat expired) while running
        self.timeout = max(1.0, min(5.0, heartbeat.node_timeout / 3))  # per request and per connect

        self._url = url
        self._prefix = prefix
        self._heartbeat = heartbeat
        self._interval = heartbeat.node_timeout / 3
        self._scripts = scripts
        self._share = share
        self._subscriptions = subscriptions
        self._publisher = publisher
        self._task: asyncio.Task[None] | None = None

        # The current session; None while Redis is unreachable (calls then go to the share).
        self.session: Session | None = None
        self._live: Session | None = None  # the session whose links are open, until it is closed
        self._session_up = False
        self._session_error: BaseException | None = None
        self._broken = asyncio.Event()
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()
        self._down_since: float | None = None
        self._first_attempt: asyncio.Future[None] | None = None

    # Life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting at most a few seconds) and keep the connection up in the background."""
        self._first_attempt = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(), name=f"relay-redis-{self.node_id}")
        self._heartbeat.join(self)
        try:
            async with asyncio.timeout(self.timeout * 2):
                await asyncio.shield(self._first_attempt)
        except TimeoutError:
            pass

    async def stop(self, *, graceful: bool) -> None:
        """Stop reconnecting; graceful: end this incarnation, sweep what this node holds, send the queue."""
        if self._task is not None:  # first: a reconnection in progress must not register a new incarnation
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._heartbeat.leave(self, graceful=graceful)
        session = self.session
        if graceful and session is not None:
            try:
                async with asyncio.timeout(self.timeout * 2):
                    await self._heartbeat.retire(session.cluster.owner)
                    await self._sweep(session.cluster, skip_owner="")
                    await self._publisher.sent(session)
            except (RedisUnavailable, RedisError, TimeoutError) as error:
                logger.warning("node %s could not remove its entries from Redis on close: %r", self.node_id, error)
        self.session = None
        live, self._live = self._live, None
        if live is not None:
            await live.close()

    # Sessions --------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, wait for the session to break, and reconnect with backoff while the adapter runs."""
        failures = Backoff(BACKOFF_MIN, BACKOFF_MAX, BACKOFF_JITTER)
        while True:
            evicted = False
            error: BaseException | None = None
            try:
                await self._open_session()
                self._first_attempt_done()
                failures.reset()
                await self._broken.wait()
                raise self._session_error or RedisUnavailable("link to Redis lost")
            except NodeEvicted as caught:
                evicted, error = True, caught
            except (RedisUnavailable, RedisError, OSError, TimeoutError) as caught:
                stop_if_cancelled()
                error = caught
            except Exception as caught:
                stop_if_cancelled()
                # A bug or an unexpected reply: log it, treat it like an outage, and carry on.
                logger.exception("Redis session of node %s failed", self.node_id)
                error = caught
            self._first_attempt_done()
            await self._end_session(error, evicted)
            if evicted:
                continue  # re-register at once: the cluster already thinks we are gone
            await asyncio.sleep(failures.failed())

    def _first_attempt_done(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _open_session(self) -> None:
        name = f"relay-{self.node_id}"
        control = self._subscriptions.control
        # A new name for every session: what an earlier one wrote may be being swept by others meanwhile.
        async with asyncio.timeout(self.timeout):
            owner = await self._heartbeat.incarnate()
        links = await open_links(self._url, name, self.timeout, control, self._prefix.encode())
        cluster = RedisClusterState(links.state, self._prefix, owner, self._scripts)
        session = Session(cluster, links)
        self._live = session  # closed by _end_session or stop(), whatever happens next
        for link in links.pipelined:
            link.on_lost = self._on_link_lost

        # From the snapshot to `self.session = session` nothing yields: calls made before it are in
        # the re-write, calls made after it run in Redis after the re-write (same link, in order).
        snapshot = self.listener.local_snapshot() if self.listener is not None else None
        entries = self._share.entries(snapshot)
        done = cluster.start_session(entries)
        self.session = session
        self._session_up = True
        self._share.forget_cache()
        self._subscriptions.begin(session, name)
        session.tasks.append(asyncio.create_task(self._publisher.run(session), name=f"{name}-publisher"))
        session.publish_wake.set()
        self.up.set()
        self.down.clear()

        rejoined = await done
        await self._sweep(cluster)  # what earlier incarnations held and the node no longer does
        if self.listener is not None:
            self._announce_rejoined(self.listener, rejoined)
            # A session task: cancelled with the session, so it never heals from a node-only answer.
            grace = self._heartbeat.node_timeout
            healer = PresenceHealer(self.listener, cluster, grace, self._subscriptions.barrier)
            session.tasks.append(asyncio.create_task(healer.run(), name=f"{name}-presence-heal"))
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
                self.alerts.raise_alert(
                    AlertKind.REDIS_RECOVERED,
                    f"Redis at {self.address} is back after {outage:.1f} s (node {self.node_id})",
                )

    def _announce_rejoined(self, listener: ClusterListener, rejoined: list[Rejoined]) -> None:
        for back in rejoined:
            member = back.membership
            held = LocalSubscription(member.app_id, member.channel, member.socket_id, member.user_id, member.user_info)
            try:
                listener.member_rejoined(held, back.removal_announced)
            except Exception:
                logger.exception("member_rejoined failed for app_id=%s channel=%s", member.app_id, member.channel)

    # Heartbeat member -------------------------------------------------------------------------------

    async def beat(self) -> None:
        """Check that the pub/sub link still answers PING, and ask it again."""
        session = self.session
        if session is None:
            return
        if asyncio.get_running_loop().time() - self._subscriptions.last_pong > self._interval * 2 + self.timeout:
            self.lose(session, RedisUnavailable("the pub/sub link stopped answering PING"))
            return
        try:
            self._subscriptions.ping(session)
        except Exception as error:
            self.lose(session, error)

    async def nodes_lost(self, node_ids: Sequence[str]) -> None:
        """Sweep what the lost nodes held (the sweep finds every dead incarnation, theirs among them)."""
        session = self.session
        if session is None:
            raise RedisUnavailable("no Redis session to sweep the lost nodes with")
        try:
            await self._sweep(session.cluster)
        except (RedisUnavailable, RedisError, OSError, TimeoutError) as error:
            self.lose(session, error)
            raise

    def evicted(self) -> None:
        """The heartbeat found this node presumed dead: the session's incarnation is over."""
        session = self.session
        if session is not None:
            self.lose(session, NodeEvicted())

    async def _sweep(self, cluster: RedisClusterState, skip_owner: str | None = None) -> None:
        """Remove dead owners' entries and report what vanished with them (exactly once cluster-wide)."""
        while True:
            result = await cluster.sweep(SWEEP_BUDGET, skip_owner)
            listener = self.listener
            if result.members_lost or result.channels_lost:
                self.alerts.raise_alert(
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

    async def _still_answers(self, session: Session | None) -> bool:
        """Whether the session's state link still answers PING (briefly: it is being replaced anyway)."""
        if session is None:
            return False
        try:
            async with asyncio.timeout(min(1.0, self.timeout)):
                return bool(await session.cluster.link.request(b"PING"))
        except (RedisUnavailable, RedisError, OSError, TimeoutError):
            return False

    def _on_link_lost(self, error: BaseException) -> None:
        self.lose(self.session, error)

    def lose(self, session: Session | None, error: BaseException) -> None:
        """`session` broke: route calls to the share from now on and wake the supervisor to reconnect."""
        if self.session is None or self.session is not session:
            return
        self.session = None
        self._publisher.unreachable()  # before anything published from now on is delivered here
        self.up.clear()
        self.down.set()
        self._session_error = error
        self._broken.set()

    async def _end_session(self, error: BaseException | None, evicted: bool) -> None:
        was_up = self._session_up
        self._session_up = False
        self.session = None
        self._publisher.unreachable()
        self.up.clear()
        self.down.set()
        self._subscriptions.end()
        self._broken.clear()
        self._session_error = None
        if evicted:
            self.evictions += 1
            logger.warning("node %s was presumed dead by the cluster (heartbeat expired); re-registering", self.node_id)
            self.alerts.raise_alert(
                AlertKind.NODE_PRESUMED_DEAD, f"node {self.node_id} was presumed dead by the cluster and re-registered"
            )
            # Heard from the heartbeat's own connection before the session's links noticed Redis was gone
            # (a restarted Redis forgot every record): that is an outage too.
            was_up = was_up and not await self._still_answers(self._live)
        if was_up:
            self.outages += 1
            self._down_since = time.monotonic()
            self._publisher.outage()
            logger.warning(
                "lost Redis at %s (%r); node %s keeps serving its local clients and reconnects",
                self.address,
                error,
                self.node_id,
            )
            self.alerts.raise_alert(
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

"""Subscriptions: which pub/sub channels this node needs, and the pub/sub link that asks Redis for them.

A channel is SUBSCRIBEd while this node has local subscribers. Changes are batched per loop iteration
(a channel vacated and re-occupied in between costs nothing), written one command at a time by the
writer of the channel's lane (session.py), and confirmed by that lane's reader, which also hands every
message on. On a Redis Cluster the verbs are SSUBSCRIBE and SUNSUBSCRIBE on the primary serving the
channel's slot; a SUNSUBSCRIBE that relay did not ask for means the slot moved, and ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Final

from redis.exceptions import RedisError

from relay.redis.link import RedisUnavailable
from relay.redis.session import PubSubLane, Session

logger = logging.getLogger(__name__)

SUBSCRIBE_BATCH: Final = 1000  # channels per SUBSCRIBE/UNSUBSCRIBE command


class Subscriptions:
    def __init__(
        self,
        control: bytes,
        current: Callable[[], Session | None],
        receive: Callable[[bytes, bytes], None],
        lose: Callable[[Session, BaseException], None],
    ) -> None:
        self.control = control  # always subscribed, the first channel of every session
        self._current = current  # the session in use, None while Redis is unreachable
        self._receive = receive  # (channel, payload) of every message
        self._lose = lose  # the pub/sub link of that session failed
        self._desired: set[bytes] = {control}
        self._active: set[bytes] = set()  # asked of Redis in this session
        self._confirmed: set[bytes] = set()  # confirmed by Redis in this session
        self._changes: dict[bytes, bool] = {}
        self._scheduled = False
        self._barrier_seq = 0
        self._barriers: list[tuple[int, asyncio.Future[None]]] = []
        self._lanes: list[PubSubLane] = []  # the current session's

    @property
    def last_pong(self) -> float:
        """When the lane heard from last longest ago answered a PING (loop time)."""
        return min((lane.last_pong for lane in self._lanes), default=0.0)

    def occupied(self, name: bytes) -> None:
        self._desired.add(name)
        self._changes[name] = True
        self._schedule()

    def vacated(self, name: bytes) -> None:
        self._desired.discard(name)
        self._changes[name] = False
        self._schedule()

    def awaits_confirmation(self, name: bytes) -> bool:
        """True when `name` is wanted in this session but Redis has not confirmed it yet."""
        return name in self._desired and name not in self._confirmed

    # Sessions ------------------------------------------------------------------------------------

    def begin(self, session: Session, name: str) -> None:
        """Subscribe the new session to everything desired and start each lane's reader and writer.

        Every lane was opened subscribed to its anchor (the control channel, or one of its own)."""
        now = asyncio.get_running_loop().time()
        self._lanes = list(session.lanes)
        anchors = {lane.anchor for lane in session.lanes}
        self._active = {self.control, *anchors}
        self._confirmed = {self.control, *anchors}
        self._changes = dict.fromkeys(self._desired, True)
        for index, lane in enumerate(session.lanes):
            lane.last_pong = now
            session.tasks += [
                asyncio.create_task(self._read(session, lane), name=f"{name}-pubsub-reader-{index}"),
                asyncio.create_task(self._write(session, lane), name=f"{name}-pubsub-writer-{index}"),
            ]
        self.flush()

    def end(self) -> None:
        self._lanes = []
        self._active.clear()
        self._confirmed.clear()
        self.fail_barriers(RedisUnavailable("link to Redis lost"))

    def ping(self, session: Session) -> None:
        session.send_pubsub((b"PING", b"alive"))

    # Changes -------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and self._current() is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Queue the SUBSCRIBE/UNSUBSCRIBE that the changes since the last flush still need."""
        self._scheduled = False
        session = self._current()
        if session is None or not self._changes:
            return  # the next session subscribes to everything desired
        changes, self._changes = self._changes, {}
        active = self._active
        add = [name for name, wanted in changes.items() if wanted and name not in active]
        remove = [name for name, wanted in changes.items() if not wanted and name in active]
        lanes = session.lanes
        for verb, names in ((b"SUBSCRIBE", add), (b"UNSUBSCRIBE", remove)):
            if len(lanes) == 1:
                by_lane = {0: names}
            else:
                by_lane = {}
                for name in names:
                    by_lane.setdefault(session.shard(name), []).append(name)
            for index, group in by_lane.items():
                lane = lanes[index]
                if lane.sharded:  # SSUBSCRIBE takes channels of one slot only (else CROSSSLOT)
                    for name in group:
                        lane.send((verb, name))
                    continue
                for start in range(0, len(group), SUBSCRIBE_BATCH):
                    lane.send((verb, *group[start : start + SUBSCRIBE_BATCH]))
        active.update(add)
        active.difference_update(remove)

    # The pub/sub link ----------------------------------------------------------------------------

    async def _write(self, session: Session, lane: PubSubLane) -> None:
        """Send SUBSCRIBE, UNSUBSCRIBE and PING on one lane, one at a time, in order."""
        pubsub, commands = lane.pubsub, lane.commands
        subscribe = pubsub.ssubscribe if lane.sharded else pubsub.subscribe
        unsubscribe = pubsub.sunsubscribe if lane.sharded else pubsub.unsubscribe
        try:
            while True:
                await lane.wake.wait()
                lane.wake.clear()
                while commands:
                    verb, *args = commands.popleft()
                    if verb == b"SUBSCRIBE":
                        await subscribe(*args)
                    elif verb == b"UNSUBSCRIBE":
                        await unsubscribe(*args)
                    else:
                        await pubsub.ping(*args)
        except (RedisError, OSError, TimeoutError) as error:
            self._lose(session, RedisUnavailable(f"pub/sub link to Redis failed: {error!r}"))

    async def _read(self, session: Session, lane: PubSubLane) -> None:
        """Every message, (un)subscribe confirmation and PING answer of one lane.

        Reads the PubSub's connection directly and hands only what is not a message to
        `PubSub.handle_message` (which keeps redis-py's subscription bookkeeping): `get_message`
        costs a retry wrapper, a dict and several awaits per message, a third of the throughput.
        """
        pubsub = lane.pubsub
        connection = pubsub.connection
        message_kind = lane.message_kind
        try:
            if connection is None:
                raise RedisUnavailable("pub/sub link has no connection")
            while True:
                reply = await connection.read_response(timeout=math.inf, disconnect_on_error=False)
                if type(reply) is list and len(reply) == 3 and reply[0] == message_kind:
                    self._receive(reply[1], reply[2])
                    continue
                message = await pubsub.handle_message(reply)
                kind = None if message is None else message["type"]
                if kind == "pong":
                    self._on_pong(lane, message["data"])
                elif kind in ("subscribe", "ssubscribe"):
                    self._confirmed.add(message["channel"])
                elif kind in ("unsubscribe", "sunsubscribe"):
                    channel = message["channel"]
                    self._confirmed.discard(channel)
                    if kind == "sunsubscribe" and channel in self._active:
                        # Not asked for: Redis Cluster moved the channel's slot (resharding or failover).
                        raise RedisUnavailable(f"Redis Cluster moved the slot of channel {channel!r}")
        except (RedisError, RedisUnavailable, OSError, TimeoutError) as error:
            self._lose(session, RedisUnavailable(f"pub/sub link to Redis failed: {error!r}"))
        except Exception as error:
            logger.exception("reading the pub/sub link failed")
            self._lose(session, error)

    def _on_pong(self, lane: PubSubLane, arg: object) -> None:
        lane.last_pong = asyncio.get_running_loop().time()
        if isinstance(arg, bytes) and arg.startswith(b"barrier:"):
            lane.barrier_seq = int(arg[8:])
            self._release_barriers(min(each.barrier_seq for each in self._lanes))

    # Barriers: a PING behind every pending change; its answer means Redis applied them all -------

    async def barrier(self) -> None:
        """Await a PING sent, on every lane, after every pending subscription change."""
        self.flush()
        session = self._current()
        if session is None:
            raise RedisUnavailable("not connected to Redis")
        self._barrier_seq += 1
        seq = self._barrier_seq
        session.send_pubsub((b"PING", b"barrier:%d" % seq))
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers.append((seq, waiter))
        await waiter

    def fail_barriers(self, error: BaseException) -> None:
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

"""Cluster state in Redis: typed calls over the Lua scripts in lua/cluster/ (key layout in common.lua).

Every write is one atomic script, so "first/last anywhere" answers stay right with any number of
nodes. This module knows nothing about outages: a broken link raises RedisUnavailable and the
adapter decides what to answer instead.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.exceptions import NoScriptError

from relay.adapters.base import CachedEvent, KeptEvent, Position, Recovered
from relay.redis.link import Arg, PipelinedLink, RedisUnavailable
from relay.redis.scripts import LuaScript
from relay.redis.wire import decode_envelope

EVICTED: Final = -1  # scripts' answer when the caller's heartbeat expired
FIRST: Final = 1  # add_members: the user's first connection on the channel anywhere
BACK: Final = 2  # add_members: first again, after a sweep announced the user's removal
RESTORE_BATCH: Final = 500  # records per script call when re-writing a node's state


class UnexpectedReply(RedisUnavailable):
    """A reply of the wrong shape: the link cannot be trusted any more."""


class NodeEvicted(Exception):
    """This owner's heartbeat expired; other nodes may be sweeping it. Re-register before writing."""


@dataclass(frozen=True, slots=True)
class Subscription:
    app_id: str
    channel: str
    socket_id: str


@dataclass(frozen=True, slots=True)
class Membership:
    app_id: str
    channel: str
    socket_id: str
    user_id: str
    user_info: Any


@dataclass(frozen=True, slots=True)
class Rejoined:
    """A membership written back that made its user a member again cluster-wide."""

    membership: Membership
    removal_announced: bool  # a sweep had announced the user's removal (else Redis had forgotten the user)


@dataclass(frozen=True, slots=True)
class NodeShareEntries:
    """Everything one node holds, as written back into Redis after an outage."""

    connections: Mapping[str, int]
    subscriptions: Sequence[Subscription]
    memberships: Sequence[Membership]


@dataclass(frozen=True, slots=True)
class SweepResult:
    more: bool
    members_lost: tuple[tuple[str, str, str], ...]  # (app_id, channel, user_id)
    channels_lost: tuple[tuple[str, str], ...]  # (app_id, channel)


def _text(value: object) -> str:
    if not isinstance(value, bytes):
        raise UnexpectedReply(f"expected a string reply, got {value!r}")
    return value.decode()


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise UnexpectedReply(f"expected an integer reply, got {value!r}")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise UnexpectedReply(f"expected an array reply, got {value!r}")
    return value


def _flags(reply: object) -> list[int]:
    if reply == EVICTED:
        raise NodeEvicted
    return [_int(flag) for flag in _list(reply)]


class RedisClusterState:
    """ClusterState for one owner (a node incarnation) over one pipelined link (link.py).

    Calls issued in order are executed by Redis in that order, because they share the link:
    the adapter relies on this to re-write state and let new calls follow it without waiting.
    """

    def __init__(self, link: PipelinedLink, prefix: str, owner: str, scripts: dict[str, LuaScript]) -> None:
        self.link = link
        self.prefix = prefix
        self.owner = owner
        self._scripts = scripts

    # Plumbing --------------------------------------------------------------------------------

    def _send(self, name: str, *args: Arg) -> asyncio.Future[Any]:
        """Write EVALSHA now (so it keeps its place in the link's order); the future gets the reply."""
        return self.link.request_nowait(b"EVALSHA", self._scripts[name].sha, 0, self.prefix, *args)

    async def _run(self, name: str, *args: Arg) -> Any:
        script = self._scripts[name]
        try:
            return await self.link.request(b"EVALSHA", script.sha, 0, self.prefix, *args)
        except NoScriptError:
            # Redis restarted or flushed its script cache after start_session() loaded them.
            return await self.link.request(b"EVAL", script.source, 0, self.prefix, *args)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # Sessions and dead owners ---------------------------------------------------------------

    def start_session(self, share: NodeShareEntries) -> Awaitable[list[Rejoined]]:
        """Queue, in this order and without yielding: load the scripts, record this owner (made alive by
        the node's heartbeat before) and write the node's whole share under it.

        Everything is written to the link before this returns, so any call made afterwards runs in
        Redis after the state is complete. Await the result to learn whether it all succeeded, and which
        memberships were their user's first on the channel cluster-wide (the cluster had lost the user:
        each such answer is given to one writer only, so announcing them is exactly once).
        """
        link = self.link
        replies: list[asyncio.Future[Any]] = [
            link.request_nowait(b"SCRIPT", b"LOAD", script.source) for script in self._scripts.values()
        ]
        replies.append(self._send("register", self.owner))
        if share.connections:
            fields: list[Arg] = [item for pair in share.connections.items() for item in pair]
            replies.append(link.request_nowait(b"HSET", self._key("node", self.owner, "conns"), *fields))
        subscriptions = share.subscriptions
        for start in range(0, len(subscriptions), RESTORE_BATCH):
            triples: list[Arg] = []
            for sub in subscriptions[start : start + RESTORE_BATCH]:
                triples += (sub.app_id, sub.channel, sub.socket_id)
            replies.append(self._send("add_subscriptions", self.owner, *triples))
        memberships = share.memberships
        batches: list[tuple[asyncio.Future[Any], Sequence[Membership]]] = []
        for start in range(0, len(memberships), RESTORE_BATCH):
            batch = memberships[start : start + RESTORE_BATCH]
            groups: list[Arg] = []
            for member in batch:
                info = orjson.dumps(member.user_info)
                groups += (member.app_id, member.channel, member.socket_id, member.user_id, info)
            batches.append((self._send("add_members", self.owner, *groups), batch))
        replies += (reply for reply, _ in batches)
        return self._check_all(replies, batches)

    @staticmethod
    async def _check_all(
        replies: list[asyncio.Future[Any]], batches: list[tuple[asyncio.Future[Any], Sequence[Membership]]]
    ) -> list[Rejoined]:
        try:
            for reply in replies:
                if await reply == EVICTED:
                    raise NodeEvicted
            rejoined: list[Rejoined] = []
            for reply, batch in batches:
                flags = _flags(reply.result())
                rejoined += (
                    Rejoined(member, flag == BACK) for member, flag in zip(batch, flags, strict=True) if flag >= FIRST
                )
            return rejoined
        finally:
            for reply in replies:  # consume every outcome so none is reported as never retrieved
                if reply.done() and not reply.cancelled():
                    reply.exception()

    async def sweep(self, budget: int, skip_owner: str | None = None) -> SweepResult:
        """Remove up to `budget` entries of dead owners; `skip_owner` (default: ours) is left alone."""
        skip = self.owner if skip_owner is None else skip_owner
        reply = _list(await self._run("sweep", budget, skip))
        more, members, channels = _int(reply[0]), _list(reply[1]), _list(reply[2])
        members_lost = tuple(
            (_text(members[i]), _text(members[i + 1]), _text(members[i + 2])) for i in range(0, len(members), 3)
        )
        channels_lost = tuple((_text(channels[i]), _text(channels[i + 1])) for i in range(0, len(channels), 2))
        return SweepResult(bool(more), members_lost, channels_lost)

    # ClusterState ----------------------------------------------------------------------------

    async def add_connection(self, app_id: str) -> int:
        count = _int(await self._run("add_connection", self.owner, app_id))
        if count == EVICTED:
            raise NodeEvicted
        return count

    async def remove_connection(self, app_id: str) -> None:
        await self._run("remove_connection", self.owner, app_id)

    async def add_subscription(self, app_id: str, channel: str, socket_id: str) -> bool:
        return _flags(await self._run("add_subscriptions", self.owner, app_id, channel, socket_id)) == [1]

    async def remove_subscription(self, app_id: str, channel: str, socket_id: str) -> bool:
        return _int(await self._run("remove_subscription", app_id, channel, socket_id)) == 1

    async def add_member(self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any) -> bool:
        info = orjson.dumps(user_info)
        reply = await self._run("add_members", self.owner, app_id, channel, socket_id, user_id, info)
        return _flags(reply)[0] >= FIRST

    async def remove_member(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        return _int(await self._run("remove_member", app_id, channel, socket_id, user_id)) == 1

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        flat = _list(await self._run("members", app_id, channel))
        return {_text(flat[i]): orjson.loads(_text(flat[i + 1])) for i in range(0, len(flat), 2)}

    async def member_count(self, app_id: str, channel: str) -> int:
        return _int(await self.link.request(b"ZCARD", self._key("app", app_id, "ch", channel, "order")))

    async def subscription_count(self, app_id: str, channel: str) -> int:
        return _int(await self.link.request(b"HLEN", self._key("app", app_id, "ch", channel, "subs")))

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        flat = _list(await self._run("channels", app_id, prefix))
        return {_text(flat[i]): _int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def set_cache(self, app_id: str, channel: str, cached: CachedEvent) -> None:
        ttl_ms = int((cached.expires_at - time.time()) * 1000)
        key = self._key("app", app_id, "cache", channel)
        if ttl_ms <= 0:
            await self.link.request(b"DEL", key)
            return
        value = orjson.dumps([cached.event, cached.data, cached.expires_at])
        await self.link.request(b"SET", key, value, b"PX", ttl_ms)

    async def get_cache(self, app_id: str, channel: str) -> CachedEvent | None:
        value = await self.link.request(b"GET", self._key("app", app_id, "cache", channel))
        if value is None:
            return None
        decoded = orjson.loads(_text(value))
        if not (isinstance(decoded, list) and len(decoded) == 3):
            raise UnexpectedReply(f"malformed cache entry for channel {channel}")
        event, data, expires_at = decoded
        if not (isinstance(event, str) and isinstance(data, str) and isinstance(expires_at, int | float)):
            raise UnexpectedReply(f"malformed cache entry for channel {channel}")
        return CachedEvent(event, data, float(expires_at))

    # Recovering channels (docs/recovery.md, "Several nodes") --------------------------------------

    # Nobody waits for these writes: a failed one only means a return is not recognised.

    def record_position(self, app_id: str, channel: str, user_id: str, position: Position, ttl_ms: int) -> None:
        args = (self.owner, app_id, channel, user_id, position.socket_id, position.event_id, ttl_ms)
        self._send("position", *args).add_done_callback(_consume)

    def forget_position(self, app_id: str, channel: str, user_id: str, socket_id: str) -> None:
        key = self._key("app", app_id, "ch", channel, "at", user_id)
        self.link.request_nowait(b"HDEL", key, socket_id).add_done_callback(_consume)

    def depart(self, app_id: str, channel: str, user_id: str, position: Position, ttl_ms: int) -> None:
        reply = self._send("depart", app_id, channel, user_id, position.event_id, position.socket_id, ttl_ms)
        reply.add_done_callback(_consume)

    async def recover(
        self, app_id: str, channel: str, user_id: str, socket_id: str, window_ms: int, fallback: Position | None
    ) -> Recovered:
        """On one Redis: where the user left and what it missed, in one call."""
        reply = await self._run("recover", app_id, channel, user_id, window_ms, _known(fallback), socket_id)
        return _recovered(reply, channel)

    async def left(
        self, app_id: str, channel: str, user_id: str, socket_id: str, fallback: Position | None
    ) -> list[Arg]:
        """On a Redis Cluster, the first half of recover(): where the user left, [] for nobody to recover, else
        [event id, socket_id, age ms] (for history_after)."""
        reply = _list(await self._run("left", app_id, channel, user_id, _known(fallback), socket_id))
        return [_text(field) for field in reply]

    async def history_after(self, link: PipelinedLink, key: bytes, window_ms: int, left: list[Arg]) -> Recovered:
        """On a Redis Cluster, the second half of recover(): what the user missed, read on `link`, the link to
        the primary serving the history `key` (the channel's shard, maybe not the state link's)."""
        script = self._scripts["history_after"]
        args = (0, self.prefix, key, window_ms, *left)
        try:
            reply = await link.request(b"EVALSHA", script.sha, *args)
        except NoScriptError:  # scripts are loaded on the state link's primary only
            reply = await link.request(b"EVAL", script.source, *args)
        return _recovered(reply, key.decode(errors="replace"))


def _known(fallback: Position | None) -> str:
    """A position the node knows, as recover.lua and left.lua take it."""
    return "" if fallback is None else "\0".join((fallback.event_id, fallback.socket_id, str(fallback.age_ms)))


def _recovered(reply: object, channel: str) -> Recovered:
    """recover.lua's or history_after.lua's answer (missed() in common.lua)."""
    reply = _list(reply)
    kind, last_id = _text(reply[0]), _text(reply[1])
    if kind == "fresh":
        return Recovered("fresh", last_id)
    if kind == "gap":
        return Recovered("gap", last_id, reason=_text(reply[2]))
    if kind != "replay":
        raise UnexpectedReply(f"recovery answered {kind!r}")
    previous = Position(_text(reply[2]), _text(reply[3]))
    events = []
    for i in range(4, len(reply), 2):
        try:
            envelope = decode_envelope(reply[i + 1])
        except (TypeError, ValueError, struct.error, UnicodeDecodeError):
            raise UnexpectedReply(f"malformed history entry in channel {channel}") from None
        events.append(KeptEvent(_text(reply[i]), envelope.frame, envelope.except_socket_id))
    return Recovered("replay", last_id, previous=previous, events=tuple(events))


def _consume(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled():
        reply.exception()

"""Publisher: the bounded queue of envelopes for Redis and the task that sends it.

What is queued goes out as calls of lua/cluster/publish.lua (PUBLISH_SCRIPT_BATCH envelopes each), one
pipeline in flight at a time (on a Redis Cluster, lua/sharded/spublish.lua calls, one pipeline per
primary), so the queue is what absorbs a slow Redis. While Redis is away the queue keeps filling and drops its oldest
entries beyond the limit. Events of recovering channels go out, in their place in the queue, as calls of
publish_kept.lua, which appends them to the channel's history (on a Redis Cluster spublish_kept.lua, on the
primary serving the channel, whose history key shares the channel's slot).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import NoScriptError

from relay.redis.link import Command, PipelinedLink, RedisReplyError, RedisUnavailable
from relay.redis.scripts import LuaScript
from relay.redis.session import Session
from relay.redis.topology import history_key
from relay.redis.wire import NO_TOKEN, TOKEN_SLICE, with_token

logger = logging.getLogger(__name__)

QUEUE_LIMIT: Final = 100_000  # envelopes waiting for Redis; the oldest are dropped beyond this
OUTBOX_BATCH: Final = 10_000  # envelopes per pipeline
PUBLISH_SCRIPT_BATCH: Final = 500  # envelopes per script call, so one call never holds Redis long
PLAIN: Final = 2  # arguments of a plain entry: pub/sub channel, payload
KEPT: Final = 6  # of a kept one: pub/sub channel, payload, app_id, channel, events kept, ttl in ms
SHARD_KEPT: Final = 5  # spublish_kept.lua's: shard channel, payload, history key, events kept, ttl in ms

# (pub/sub channel, payload), or (pub/sub channel, payload, app_id, channel, events kept, ttl ms) for an
# event of a recovering channel.
Entry = tuple[bytes | str | int, ...]


class Publisher:
    def __init__(
        self,
        prefix: str,
        scripts: dict[str, LuaScript],
        shard_scripts: tuple[LuaScript, LuaScript],
        current: Callable[[], Session | None],
        reply_error: Callable[[RedisReplyError], None],
        deliver_here: Callable[[bytes], None],
        token: bytes,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._prefix = prefix
        self._scripts = {PLAIN: scripts["publish"], KEPT: scripts["publish_kept"]}
        # Their counterparts on a Redis Cluster (SPUBLISH), one pipeline per primary.
        self._shard_scripts = {PLAIN: shard_scripts[0], SHARD_KEPT: shard_scripts[1]}
        self._sources = {script.sha: script.source for script in (*scripts.values(), *shard_scripts)}
        # Where a kept call's groups start and how long they are, by script: what _lost() must deliver here.
        self._kept_groups = {self._scripts[KEPT].sha: KEPT, shard_scripts[1].sha: SHARD_KEPT}
        # A kept event that will not reach Redis soon: this node delivers it itself (id-less) and marks it
        # with its token, so the copy Redis publishes later is not delivered here again.
        self._deliver_here = deliver_here
        self._token = token
        self._current = current
        self._reply_error = reply_error
        self._queue_limit = queue_limit
        self._outbox: collections.deque[Entry] = collections.deque()
        self._dropping = False
        self._in_flight: list[Command] = []  # the pipeline Redis has not answered yet
        self.dropped = 0  # envelopes dropped from a full queue while Redis was slow or away
        self.published = 0  # envelopes sent to Redis

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def enqueue(self, entry: Entry) -> None:
        outbox = self._outbox
        if len(outbox) >= self._queue_limit:
            outbox.popleft()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                logger.warning("publish queue for Redis is full (%d); dropping the oldest", self._queue_limit)
        outbox.append(entry)
        session = self._current()
        if session is not None:
            session.publish_idle.clear()
            session.publish_wake.set()

    def outage(self) -> None:
        """Redis was lost: a full queue is reported again once it fills anew."""
        self._dropping = False

    def unreachable(self) -> None:
        """The session broke: kept events waiting for Redis to deliver them here are delivered now, in order
        (live delivery never waits for an outage to end). Idempotent."""
        self._lost()  # older than anything queued: delivered first
        outbox = self._outbox
        for index, entry in enumerate(outbox):
            if len(entry) == KEPT and entry[1][TOKEN_SLICE] == NO_TOKEN:  # type: ignore[index]
                outbox[index] = self._delivered_here(entry)

    def _delivered_here(self, entry: Entry) -> Entry:
        payload = entry[1]
        assert isinstance(payload, bytes)
        self._deliver_here(payload)
        return (entry[0], with_token(payload, self._token), *entry[2:])

    def _lost(self) -> None:
        """The pipeline in flight is lost with the link: its kept events are delivered here now (if Redis ran
        it before the link broke and the pub/sub link brought them already, they come twice)."""
        commands, self._in_flight = self._in_flight, []
        for command in commands:
            size = self._kept_groups.get(str(command[1]))
            if size is not None:
                for start in range(4, len(command), size):
                    payload = command[start + 1]
                    if isinstance(payload, bytes) and payload[TOKEN_SLICE] == NO_TOKEN:
                        self._deliver_here(payload)

    async def run(self, session: Session) -> None:
        """The session's publisher: everything queued goes out, in order, in batches.

        A batch lost with the link is not re-sent: at most once, never duplicated.
        """
        send = self._send_sharded if session.slot_map is not None else self._send
        outbox = self._outbox
        while True:
            await session.publish_wake.wait()
            session.publish_wake.clear()
            while outbox:
                count = min(len(outbox), OUTBOX_BATCH)
                if not await send(session, count):
                    return  # the link's on_lost ends the session
                self.published += count
            self._dropping = False
            session.publish_idle.set()

    async def _send(self, session: Session, count: int) -> bool:
        """The next `count` entries in one pipeline to the one Redis; False when the link was lost."""
        commands = self._in_flight = self._commands(count)
        try:
            replies = await self._execute(session.publisher, self._sources, commands)
        except RedisUnavailable:
            self._lost()
            return False
        self._in_flight = []
        self._report(replies)
        return True

    def _commands(self, count: int) -> list[Command]:
        """The next `count` entries as script calls, in order."""
        outbox = self._outbox
        return self._calls([outbox.popleft() for _ in range(count)], self._scripts)

    def _calls(self, entries: list[Entry], scripts: dict[int, LuaScript]) -> list[Command]:
        """`entries` as calls of `scripts` (by entry length), in order: a run of plain or of kept ones per call."""
        commands: list[Command] = []
        args: list[bytes | str | int] = []
        size = 0
        calls = 0
        for entry in entries:
            if len(entry) != size or calls == PUBLISH_SCRIPT_BATCH:
                if args:
                    commands.append(tuple(args))
                size = len(entry)
                args = [b"EVALSHA", scripts[size].sha, 0, self._prefix]
                calls = 0
            args += entry
            calls += 1
        if args:
            commands.append(tuple(args))
        return commands

    @staticmethod
    async def _execute(link: PipelinedLink, sources: dict[str, str], commands: list[Command]) -> list[Any]:
        """`sources`: each script's source by its sha, for a Redis that has not loaded it."""
        replies = await link.execute(commands)
        missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # The link's Redis had not loaded that script yet (the session loads them on the state link only).
            # Only those calls again: the others ran (a pipeline may mix a loaded script with one that is not).
            retry = [(b"EVAL", sources[str(commands[index][1])], *commands[index][2:]) for index in missing]
            for index, reply in zip(missing, await link.execute(retry), strict=True):
                replies[index] = reply
        return replies

    def _report(self, replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                self._reply_error(reply)

    async def _send_sharded(self, session: Session, count: int) -> bool:
        """On a Redis Cluster: the next `count` entries as lua/sharded/spublish.lua and
        lua/cluster/spublish_kept.lua calls, pipelined to each primary for the envelopes whose channels it
        serves, every primary's pipeline in flight side by side; False when a link was lost.

        Order holds per channel (one channel, one primary, one pipeline at a time).
        """
        groups: dict[int, list[Entry]] = {}
        for _ in range(count):
            entry = self._outbox.popleft()
            channel = entry[0]
            assert isinstance(channel, bytes)
            if len(entry) == KEPT:  # app_id and channel give way to the history key in the channel's slot
                entry = (channel, entry[1], history_key(channel), entry[4], entry[5])
            entries = groups.get(shard := session.shard(channel))
            if entries is None:
                entries = groups[shard] = []
            entries.append(entry)
        calls = {index: self._calls(entries, self._shard_scripts) for index, entries in groups.items()}
        self._in_flight = [command for commands in calls.values() for command in commands]
        sends = [self._execute(session.publishers[index], self._sources, commands) for index, commands in calls.items()]
        results = await asyncio.gather(*sends, return_exceptions=True)  # each ends before we go on
        for replies in results:
            if isinstance(replies, RedisUnavailable):
                self._lost()
                return False
            if isinstance(replies, BaseException):
                raise replies
        self._in_flight = []
        for replies in results:
            assert isinstance(replies, list)
            self._report(replies)
        return True

    async def sent(self, session: Session) -> None:
        """Return once Redis has every envelope queued so far (graceful close)."""
        while self._outbox or not session.publish_idle.is_set():
            if not session.publishers_open:
                raise RedisUnavailable("publish link to Redis lost")
            session.publish_idle.clear()  # a set Event would not yield: the publisher must run first
            session.publish_wake.set()
            await session.publish_idle.wait()

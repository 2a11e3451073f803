"""Publisher: the bounded queue of envelopes for Redis and the task that sends it.

What is queued goes out as calls of lua/cluster/publish.lua (PUBLISH_SCRIPT_BATCH envelopes each), one
pipeline in flight at a time (on a Redis Cluster, lua/sharded/spublish.lua calls, one pipeline per
primary), so the queue is what absorbs a slow Redis. While Redis is away the queue keeps filling and drops its oldest
entries beyond the limit.
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

logger = logging.getLogger(__name__)

QUEUE_LIMIT: Final = 100_000  # envelopes waiting for Redis; the oldest are dropped beyond this
OUTBOX_BATCH: Final = 10_000  # envelopes per pipeline
PUBLISH_SCRIPT_BATCH: Final = 500  # envelopes per script call, so one call never holds Redis long


class Publisher:
    def __init__(
        self,
        prefix: str,
        script: LuaScript,
        shard_script: LuaScript,
        current: Callable[[], Session | None],
        reply_error: Callable[[RedisReplyError], None],
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._prefix = prefix
        self._script = script
        self._shard_script = shard_script  # its counterpart on a Redis Cluster (SPUBLISH), one call per primary
        self._current = current
        self._reply_error = reply_error
        self._queue_limit = queue_limit
        self._outbox: collections.deque[tuple[bytes, bytes]] = collections.deque()  # (channel, payload)
        self._dropping = False
        self.dropped = 0  # envelopes dropped from a full queue while Redis was slow or away
        self.published = 0  # envelopes sent to Redis

    @property
    def queued(self) -> int:
        return len(self._outbox)

    def enqueue(self, channel: bytes, payload: bytes) -> None:
        outbox = self._outbox
        if len(outbox) >= self._queue_limit:
            outbox.popleft()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                logger.warning("publish queue for Redis is full (%d); dropping the oldest", self._queue_limit)
        outbox.append((channel, payload))
        session = self._current()
        if session is not None:
            session.publish_idle.clear()
            session.publish_wake.set()

    def outage(self) -> None:
        """Redis was lost: a full queue is reported again once it fills anew."""
        self._dropping = False

    async def run(self, session: Session) -> None:
        """The session's publisher: everything queued goes out, in order.

        A pipeline lost with the link is not re-sent: at most once, never duplicated.
        """
        if session.slot_map is not None:
            await self._run_sharded(session)
            return
        outbox = self._outbox
        script = self._script
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
                    replies = await self._execute(session.publisher, script, commands)
                except RedisUnavailable:
                    return  # the link's on_lost ends the session
                self._report(replies)
                self.published += count
            self._dropping = False
            session.publish_idle.set()

    @staticmethod
    async def _execute(link: PipelinedLink, script: LuaScript, commands: list[Command]) -> list[Any]:
        replies = await link.execute(commands)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # The link's Redis had not loaded the script yet (the session loads it on the state link only).
            retry = [(b"EVAL", script.source, *command[2:]) for command in commands]
            replies = await link.execute(retry)
        return replies

    def _report(self, replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                self._reply_error(reply)

    async def _run_sharded(self, session: Session) -> None:
        """On a Redis Cluster: lua/sharded/spublish.lua calls, pipelined to each primary for the envelopes
        whose channels it serves, every primary's pipeline in flight side by side.

        Order holds per channel (one channel, one primary, one pipeline at a time).
        """
        outbox = self._outbox
        script = self._shard_script
        while True:
            await session.publish_wake.wait()
            session.publish_wake.clear()
            while outbox:
                count = min(len(outbox), OUTBOX_BATCH)
                groups: dict[int, list[bytes]] = {}
                for _ in range(count):
                    channel, payload = outbox.popleft()
                    pairs = groups.get(shard := session.shard(channel))
                    if pairs is None:
                        pairs = groups[shard] = []
                    pairs += (channel, payload)
                sends = []
                for index, pairs in groups.items():
                    commands: list[Command] = [
                        (b"EVALSHA", script.sha, 0, self._prefix, *pairs[start : start + 2 * PUBLISH_SCRIPT_BATCH])
                        for start in range(0, len(pairs), 2 * PUBLISH_SCRIPT_BATCH)
                    ]
                    sends.append(self._execute(session.publishers[index], script, commands))
                results = await asyncio.gather(*sends, return_exceptions=True)  # each ends before we go on
                for replies in results:
                    if isinstance(replies, BaseException):
                        if isinstance(replies, RedisUnavailable):
                            return  # the link's on_lost ends the session
                        raise replies
                    self._report(replies)
                self.published += count
            self._dropping = False
            session.publish_idle.set()

    async def sent(self, session: Session) -> None:
        """Return once Redis has every envelope queued so far (graceful close)."""
        while self._outbox or not session.publish_idle.is_set():
            if not session.publishers_open:
                raise RedisUnavailable("publish link to Redis lost")
            session.publish_idle.clear()  # a set Event would not yield: the publisher must run first
            session.publish_wake.set()
            await session.publish_idle.wait()

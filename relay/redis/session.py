"""Session: the links of one connection to Redis and the tasks serving them; replaced after every outage.

On one Redis a session has one publish link and one pub/sub lane. On a Redis Cluster it has one of each
per primary (sharded pub/sub: SPUBLISH and SSUBSCRIBE go to the primary serving the channel's slot), and
`slot_map` routes a channel name to its primary's index; the cluster state link goes to the primary of
the state keys' hash tag, and a history link per primary reads recovering channels' histories, which sit
in their shard channels' slots (docs/recovery.md).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from relay.backoff import cancel_and_wait
from relay.redis.link import PipelinedLink, RedisUnavailable, open_pubsub
from relay.redis.state import RedisClusterState
from relay.redis.topology import ClusterUnavailable, SlotMap, is_cluster_url, read_slot_map

logger = logging.getLogger(__name__)

MESSAGE: Final = b"message"
SHARD_MESSAGE: Final = b"smessage"


@dataclass(eq=False)
class PubSubLane:
    """One pub/sub connection and the SUBSCRIBE, UNSUBSCRIBE and PING commands queued for its writer."""

    client: Redis
    pubsub: PubSub
    sharded: bool  # SSUBSCRIBE/SUNSUBSCRIBE and `smessage` (Redis Cluster) instead of the classic verbs
    anchor: bytes  # the channel it was opened with, subscribed for the whole session
    commands: collections.deque[tuple[bytes, ...]] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_pong: float = 0.0
    barrier_seq: int = 0  # the last barrier PING this lane answered

    @property
    def message_kind(self) -> bytes:
        return SHARD_MESSAGE if self.sharded else MESSAGE

    def send(self, command: tuple[bytes, ...]) -> None:
        self.commands.append(command)
        self.wake.set()

    async def close(self) -> None:
        for close in (self.pubsub.aclose, self.client.aclose):
            try:
                await close()
            except Exception as error:  # the link is gone already; nothing to do about it
                logger.debug("closing the pub/sub link: %r", error)


class Session:
    def __init__(self, cluster: RedisClusterState, links: Links) -> None:
        self.cluster = cluster
        self.publishers = links.publishers  # one per primary on a cluster, else one
        self.publisher = links.publishers[0]
        self.lanes = links.lanes  # same order as publishers
        self.histories = links.histories  # same order too, on a cluster; else none (the state link reads them)
        self.slot_map = links.slot_map  # None on one Redis
        self.publish_wake = asyncio.Event()
        self.publish_idle = asyncio.Event()  # set while no PUBLISH is queued or in flight
        self.publish_idle.set()
        self.tasks: list[asyncio.Task[None]] = []

    def shard(self, channel: bytes) -> int:
        """Index of the publisher and lane serving `channel` (always 0 on one Redis)."""
        return 0 if self.slot_map is None else self.slot_map.shard_of(channel)

    def send_pubsub(self, command: tuple[bytes, ...]) -> None:
        """Queue a PING for every lane's writer."""
        for lane in self.lanes:
            lane.send(command)

    @property
    def publishers_open(self) -> bool:
        return all(link.is_open for link in self.publishers)

    async def close(self) -> None:
        # A reader stuck past the bound (a swallowed cancel) ends as its link closes below.
        await cancel_and_wait(self.tasks, self.cluster.link.timeout * 2)
        self.tasks.clear()
        await self.cluster.link.close()
        for link in (*self.publishers, *self.histories):
            await link.close()
        for lane in self.lanes:
            await lane.close()


@dataclass(frozen=True, slots=True)
class Links:
    """A session's open links, before its cluster state exists."""

    state: PipelinedLink
    publishers: list[PipelinedLink]
    lanes: list[PubSubLane]
    slot_map: SlotMap | None
    histories: list[PipelinedLink] = field(default_factory=list)

    @property
    def pipelined(self) -> tuple[PipelinedLink, ...]:
        return (self.state, *self.publishers, *self.histories)

    async def close(self) -> None:
        for link in self.pipelined:
            await link.close()
        for lane in self.lanes:
            await lane.close()


def anchor_channel(control: bytes, slot_map: SlotMap, shard: int) -> bytes:
    """The control channel when `shard` serves it, else a channel of relay's own that `shard` serves."""
    if slot_map.shard_of(control) == shard:
        return control
    n = 0
    while slot_map.shard_of(b"%s:lane:%d" % (control, n)) != shard:
        n += 1
    return b"%s:lane:%d" % (control, n)


async def open_links(url: str, name: str, timeout: float, control: bytes, state_key: bytes) -> Links:
    """Open a session's links: on one Redis three connections; on a Redis Cluster the state link to the
    primary serving `state_key`, and a publish link, a pub/sub lane and a history link to every primary.

    RedisUnavailable when any of them cannot be opened (what was opened is closed again)."""
    slot_map: SlotMap | None = None
    primaries = [url]
    if is_cluster_url(url):
        try:
            slot_map = await read_slot_map(url, timeout)
        except ClusterUnavailable as error:
            raise RedisUnavailable(str(error)) from error
        primaries = list(slot_map.primaries)
    state_url = url if slot_map is None else primaries[slot_map.shard_of(state_key)]
    state = await PipelinedLink.open(state_url, f"{name}-state", timeout)
    links = Links(state, [], [], slot_map)
    try:
        for index, primary in enumerate(primaries):
            links.publishers.append(await PipelinedLink.open(primary, f"{name}-publish-{index}", timeout))
            anchor = control if slot_map is None else anchor_channel(control, slot_map, index)
            sharded = slot_map is not None
            client, pubsub = await open_pubsub(primary, f"{name}-subscribe-{index}", timeout, anchor, sharded=sharded)
            links.lanes.append(PubSubLane(client, pubsub, sharded, anchor))
            if sharded:
                links.histories.append(await PipelinedLink.open(primary, f"{name}-history-{index}", timeout))
    except BaseException:
        await links.close()
        raise
    return links

"""Session: the links of one connection to Redis and the tasks serving them; replaced after every outage."""

from __future__ import annotations

import asyncio
import collections
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from relay.backoff import cancel_and_wait
from relay.redis.link import PipelinedLink
from relay.redis.state import RedisClusterState

logger = logging.getLogger(__name__)


class Session:
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

    def send_pubsub(self, command: tuple[bytes, ...]) -> None:
        """Queue SUBSCRIBE, UNSUBSCRIBE or PING for the pub/sub link's writer."""
        self.pubsub_commands.append(command)
        self.pubsub_wake.set()

    async def close(self) -> None:
        # A reader stuck past the bound (a swallowed cancel) ends as its link closes below.
        await cancel_and_wait(self.tasks, self.cluster.link.timeout * 2)
        self.tasks.clear()
        await self.cluster.link.close()
        await self.publisher.close()
        for close in (self.pubsub.aclose, self.pubsub_client.aclose):
            try:
                await close()
            except Exception as error:  # the link is gone already; nothing to do about it
                logger.debug("closing the pub/sub link: %r", error)

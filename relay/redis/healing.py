"""PresenceHealer: after an outage, brings a node's clients' presence in line with the cluster's.

While a node was away from Redis its clients missed the member changes other nodes published, and a
Redis that restarted forgot every member until each node writes its own back. So, once the node's share
is written back, each presence channel with local subscribers is compared with the cluster's list:
members the clients do not know are announced at once; members they know and the cluster lacks are
announced as removed only if the cluster still lacks them node_timeout later, the time every live node
has to write its own members back (a node not back by then is presumed dead, as with a missed heartbeat).
That second pass always runs, and announces again members whose removal arrived late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from relay.adapters.base import ClusterListener
from relay.redis.state import RedisClusterState

logger = logging.getLogger(__name__)


class PresenceHealer:
    def __init__(
        self,
        listener: ClusterListener,
        cluster: RedisClusterState,
        grace: float,
        subscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self._listener = listener
        self._cluster = cluster
        self._grace = grace
        self._subscribed = subscribed  # returns once Redis confirmed this node's SUBSCRIBEs

    async def run(self) -> None:
        """Two passes, `grace` apart; a session task, so a new outage cancels it (it never heals from
        the node's own answers)."""
        try:
            # Subscribed first: a change published after the list is read then reaches this node.
            await self._subscribed()
            missing = await self._heal({})
            # A second pass even when nothing was missing: a member_removed published by a node that swept
            # this node's old entries before it wrote them back can arrive after the first pass, and only a
            # later comparison announces that member again.
            await asyncio.sleep(self._grace)
            await self._heal(missing)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The session broke (the supervisor notices on its own) or a reply was malformed.
            logger.warning("healing presence after an outage stopped: %r", error)

    async def _heal(self, vanished: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
        """One pass over every local presence channel; returns the users missing from the cluster, per channel."""
        missing: dict[tuple[str, str], set[str]] = {}
        for app_id, channel in self._listener.presence_channels():
            members = await self._cluster.members(app_id, channel)
            gone = self._listener.heal_members(app_id, channel, members, vanished.get((app_id, channel), ()))
            if gone:
                missing[(app_id, channel)] = gone
        return missing

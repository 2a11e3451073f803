"""NodeShare: this node's own part of the cluster state, kept in memory beside Redis.

The Redis adapter records every ClusterState call here first. While Redis is unreachable the
share answers instead (local-only answers), and when Redis returns the share is what the node
writes back. It is the in-memory adapter's bookkeeping (relay.adapters.memory) plus `entries()`,
the per-socket listing a re-write needs, kept synchronous because it sits on every call's path.
"""

from __future__ import annotations

from collections.abc import Iterable

from relay.adapters.base import LocalSnapshot
from relay.adapters.memory import MemoryState
from relay.redis.state import Membership, NodeShareEntries, Subscription


class NodeShare(MemoryState):
    """MemoryState plus what a re-write after an outage needs."""

    def forget_cache(self) -> None:
        """Redis is back: its cache entries are the cluster's answer again."""
        self._cache.clear()

    def entries(self, snapshot: LocalSnapshot | None = None) -> NodeShareEntries:
        """Everything recorded here, plus whatever `snapshot` (the node's own view) holds beyond it.

        The share covers calls still in flight (a member added whose subscription the node has
        not registered yet); the snapshot covers anything the node holds without having told us.
        Where both know a member, the user_info recorded by add_member wins.
        """
        connections = {app_id: len(sockets) for app_id, sockets in self._connections.items()}
        subscriptions = [
            Subscription(app_id, channel, socket_id)
            for (app_id, channel), sockets in self._subscriptions.items()
            for socket_id in sockets
        ]
        memberships = [
            Membership(app_id, channel, socket_id, user_id, info)
            for (app_id, channel), members in self._members.items()
            for user_id, (info, sockets) in members.items()
            for socket_id in sockets
        ]
        if snapshot is not None:
            for app_id, count in snapshot.connections.items():
                connections[app_id] = max(count, connections.get(app_id, 0))
            subscriptions += self._missing_subscriptions(snapshot)
            memberships += self._missing_memberships(snapshot)
        return NodeShareEntries(connections, subscriptions, memberships)

    def _missing_subscriptions(self, snapshot: LocalSnapshot) -> Iterable[Subscription]:
        for held in snapshot.subscriptions:
            if held.socket_id not in self._subscriptions.get((held.app_id, held.channel), ()):
                yield Subscription(held.app_id, held.channel, held.socket_id)

    def _missing_memberships(self, snapshot: LocalSnapshot) -> Iterable[Membership]:
        for held in snapshot.subscriptions:
            if held.user_id is None:
                continue
            entry = self._members.get((held.app_id, held.channel), {}).get(held.user_id)
            if entry is None or held.socket_id not in entry[1]:
                yield Membership(held.app_id, held.channel, held.socket_id, held.user_id, held.user_info)

"""NodeShare: this node's own part of the cluster state, kept in memory beside Redis.

The Redis adapter records every ClusterState call here first. While Redis is unreachable the
share answers instead (local-only answers), and when Redis returns the share is what the node
writes back. It is LocalAdapter's bookkeeping plus `entries()`, the per-socket listing a
re-write needs, kept synchronous because it sits on every call's path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from relay.adapters.base import CachedEvent, LocalSnapshot
from relay.redis.state import Membership, NodeShareEntries, Subscription


class NodeShare:
    def __init__(self) -> None:
        self._connections: dict[str, set[str]] = {}
        self._subscriptions: dict[tuple[str, str], set[str]] = {}
        # (app, channel) -> user_id -> (user_info, socket ids); dicts keep join order.
        self._members: dict[tuple[str, str], dict[str, tuple[Any, set[str]]]] = {}
        # Only cache entries set while Redis was unreachable; Redis holds the rest.
        self._cache: dict[tuple[str, str], CachedEvent] = {}

    def add_connection(self, app_id: str, socket_id: str) -> int:
        sockets = self._connections.setdefault(app_id, set())
        sockets.add(socket_id)
        return len(sockets)

    def remove_connection(self, app_id: str, socket_id: str) -> None:
        sockets = self._connections.get(app_id)
        if sockets is not None:
            sockets.discard(socket_id)
            if not sockets:
                del self._connections[app_id]

    def add_subscription(self, app_id: str, channel: str, socket_id: str) -> bool:
        sockets = self._subscriptions.setdefault((app_id, channel), set())
        first = not sockets
        sockets.add(socket_id)
        return first

    def remove_subscription(self, app_id: str, channel: str, socket_id: str) -> bool:
        key = (app_id, channel)
        sockets = self._subscriptions.get(key)
        if sockets is None or socket_id not in sockets:
            return False
        sockets.remove(socket_id)
        if sockets:
            return False
        del self._subscriptions[key]
        return True

    def add_member(self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any) -> bool:
        members = self._members.setdefault((app_id, channel), {})
        entry = members.get(user_id)
        if entry is None:
            members[user_id] = (user_info, {socket_id})
            return True
        entry[1].add(socket_id)
        return False

    def remove_member(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        key = (app_id, channel)
        members = self._members.get(key)
        entry = None if members is None else members.get(user_id)
        if members is None or entry is None or socket_id not in entry[1]:
            return False
        entry[1].remove(socket_id)
        if entry[1]:
            return False
        del members[user_id]
        if not members:
            del self._members[key]
        return True

    def members(self, app_id: str, channel: str) -> dict[str, Any]:
        return {user_id: info for user_id, (info, _) in self._members.get((app_id, channel), {}).items()}

    def member_count(self, app_id: str, channel: str) -> int:
        return len(self._members.get((app_id, channel), {}))

    def subscription_count(self, app_id: str, channel: str) -> int:
        return len(self._subscriptions.get((app_id, channel), ()))

    def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        return {
            channel: len(sockets)
            for (owner, channel), sockets in self._subscriptions.items()
            if owner == app_id and channel.startswith(prefix)
        }

    def set_cache(self, app_id: str, channel: str, cached: CachedEvent) -> None:
        self._cache[(app_id, channel)] = cached

    def get_cache(self, app_id: str, channel: str) -> CachedEvent | None:
        cached = self._cache.get((app_id, channel))
        if cached is not None and cached.expires_at <= time.time():
            del self._cache[(app_id, channel)]
            return None
        return cached

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

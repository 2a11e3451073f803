"""Cluster state kept in one process's memory: the bookkeeping behind the in-memory adapter, and behind the
Redis adapter's copy of its own node's part (relay.redis.share) while Redis is away."""

from __future__ import annotations

import time
from typing import Any

from relay.adapters.base import CachedEvent


class MemoryState:
    """Connections, subscriptions, presence members and cache entries as plain dicts; synchronous."""

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

    def is_empty(self) -> bool:
        """No connection, subscription or member left (the leak tests' check)."""
        return not (self._connections or self._subscriptions or self._members)

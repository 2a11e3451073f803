"""Single-process adapter: fan-out is a direct call, cluster state is this process's memory."""

from __future__ import annotations

import time
from typing import Any

from relay.adapters.base import CachedEvent, ClusterListener, Envelope
from relay.protocol.ids import AppId, SocketId, UserId


class LocalAdapter:
    """Broadcaster and ClusterState for one process; nothing here needs Redis."""

    def __init__(self) -> None:
        self._listener: ClusterListener | None = None
        self._connections: dict[str, set[str]] = {}
        self._subscriptions: dict[tuple[str, str], set[str]] = {}
        # (app, channel) -> user_id -> (user_info, socket ids); dicts keep join order for `members`.
        self._members: dict[tuple[str, str], dict[str, tuple[Any, set[str]]]] = {}
        self._cache: dict[tuple[str, str], CachedEvent] = {}

    async def start(self, listener: ClusterListener) -> None:
        self._listener = listener

    async def close(self) -> None:
        self._listener = None

    def publish(self, envelope: Envelope) -> None:
        if self._listener is not None:
            self._listener.deliver(envelope)

    def channel_occupied_locally(self, app_id: AppId, channel: str) -> None:
        pass  # every envelope is local already

    def channel_vacated_locally(self, app_id: AppId, channel: str) -> None:
        pass

    async def add_connection(self, app_id: AppId, socket_id: SocketId) -> int:
        sockets = self._connections.setdefault(app_id, set())
        sockets.add(socket_id)
        return len(sockets)

    async def remove_connection(self, app_id: AppId, socket_id: SocketId) -> None:
        sockets = self._connections.get(app_id)
        if sockets is not None:
            sockets.discard(socket_id)
            if not sockets:
                del self._connections[app_id]

    async def add_subscription(self, app_id: AppId, channel: str, socket_id: SocketId) -> bool:
        sockets = self._subscriptions.setdefault((app_id, channel), set())
        first = not sockets
        sockets.add(socket_id)
        return first

    async def remove_subscription(self, app_id: AppId, channel: str, socket_id: SocketId) -> bool:
        key = (app_id, channel)
        sockets = self._subscriptions.get(key)
        if sockets is None or socket_id not in sockets:
            return False
        sockets.remove(socket_id)
        if sockets:
            return False
        del self._subscriptions[key]
        return True

    async def add_member(
        self, app_id: AppId, channel: str, socket_id: SocketId, user_id: UserId, user_info: Any
    ) -> bool:
        members = self._members.setdefault((app_id, channel), {})
        entry = members.get(user_id)
        if entry is None:
            members[user_id] = (user_info, {socket_id})
            return True
        entry[1].add(socket_id)
        return False

    async def remove_member(self, app_id: AppId, channel: str, socket_id: SocketId, user_id: UserId) -> bool:
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

    async def members(self, app_id: AppId, channel: str) -> dict[str, Any]:
        return {user_id: info for user_id, (info, _) in self._members.get((app_id, channel), {}).items()}

    async def member_count(self, app_id: AppId, channel: str) -> int:
        return len(self._members.get((app_id, channel), {}))

    async def subscription_count(self, app_id: AppId, channel: str) -> int:
        return len(self._subscriptions.get((app_id, channel), ()))

    async def channels(self, app_id: AppId, prefix: str = "") -> dict[str, int]:
        return {
            channel: len(sockets)
            for (owner, channel), sockets in self._subscriptions.items()
            if owner == app_id and channel.startswith(prefix)
        }

    async def set_cache(self, app_id: AppId, channel: str, cached: CachedEvent) -> None:
        self._cache[(app_id, channel)] = cached

    async def get_cache(self, app_id: AppId, channel: str) -> CachedEvent | None:
        key = (app_id, channel)
        cached = self._cache.get(key)
        if cached is not None and cached.expires_at <= time.time():
            del self._cache[key]
            return None
        return cached

    def is_empty(self) -> bool:
        """No connection, subscription or member left (the leak tests' check)."""
        return not (self._connections or self._subscriptions or self._members)

"""Single-process adapter: fan-out is a direct call, cluster state is this process's memory."""

from __future__ import annotations

from typing import Any

from relay.adapters.base import CachedEvent, ClusterListener, Envelope
from relay.adapters.memory import MemoryState
from relay.protocol.ids import AppId, SocketId, UserId


class LocalAdapter:
    """Broadcaster and ClusterState for one process; nothing here needs Redis."""

    # Every call below returns without suspending. A subclass may await (a test's slow adapter, a
    # backend of one's own), so it is taken to suspend unless it says otherwise itself.
    completes_synchronously = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "completes_synchronously" not in cls.__dict__:
            cls.completes_synchronously = False

    def __init__(self) -> None:
        self._listener: ClusterListener | None = None
        self.state = MemoryState()

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
        return self.state.add_connection(app_id, socket_id)

    async def remove_connection(self, app_id: AppId, socket_id: SocketId) -> None:
        self.state.remove_connection(app_id, socket_id)

    async def add_subscription(self, app_id: AppId, channel: str, socket_id: SocketId) -> bool:
        return self.state.add_subscription(app_id, channel, socket_id)

    async def remove_subscription(self, app_id: AppId, channel: str, socket_id: SocketId) -> bool:
        return self.state.remove_subscription(app_id, channel, socket_id)

    async def add_member(
        self, app_id: AppId, channel: str, socket_id: SocketId, user_id: UserId, user_info: Any
    ) -> bool:
        return self.state.add_member(app_id, channel, socket_id, user_id, user_info)

    async def remove_member(self, app_id: AppId, channel: str, socket_id: SocketId, user_id: UserId) -> bool:
        return self.state.remove_member(app_id, channel, socket_id, user_id)

    async def members(self, app_id: AppId, channel: str) -> dict[str, Any]:
        return self.state.members(app_id, channel)

    async def member_count(self, app_id: AppId, channel: str) -> int:
        return self.state.member_count(app_id, channel)

    async def subscription_count(self, app_id: AppId, channel: str) -> int:
        return self.state.subscription_count(app_id, channel)

    async def channels(self, app_id: AppId, prefix: str = "") -> dict[str, int]:
        return self.state.channels(app_id, prefix)

    async def set_cache(self, app_id: AppId, channel: str, cached: CachedEvent) -> None:
        self.state.set_cache(app_id, channel, cached)

    async def get_cache(self, app_id: AppId, channel: str) -> CachedEvent | None:
        return self.state.get_cache(app_id, channel)

    def is_empty(self) -> bool:
        """No connection, subscription or member left (the leak tests' check)."""
        return self.state.is_empty()

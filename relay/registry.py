"""Which local connections are in which channel, per app. Plain dicts; no I/O.

Generic over what it stores per socket id, so the node can keep its connection objects here and
fan out without a second lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelRegistry(Generic[T]):
    __slots__ = ("_apps",)

    def __init__(self) -> None:
        self._apps: dict[str, dict[str, dict[str, T]]] = {}

    def add(self, app_id: str, channel: str, socket_id: str, value: T) -> bool:
        """Returns True when `channel` had no local subscriber before."""
        channels = self._apps.setdefault(app_id, {})
        subscribers = channels.get(channel)
        if subscribers is None:
            channels[channel] = {socket_id: value}
            return True
        subscribers[socket_id] = value
        return False

    def remove(self, app_id: str, channel: str, socket_id: str) -> bool:
        """Returns True when that was the channel's last local subscriber."""
        channels = self._apps.get(app_id)
        if channels is None:
            return False
        subscribers = channels.get(channel)
        if subscribers is None or subscribers.pop(socket_id, None) is None:
            return False
        if subscribers:
            return False
        del channels[channel]
        if not channels:
            del self._apps[app_id]
        return True

    def contains(self, app_id: str, channel: str, socket_id: str) -> bool:
        subscribers = self._apps.get(app_id, {}).get(channel)
        return subscribers is not None and socket_id in subscribers

    def subscribers(self, app_id: str, channel: str) -> dict[str, T] | None:
        """The live mapping (do not mutate it while iterating); None when nobody local is subscribed."""
        channels = self._apps.get(app_id)
        return None if channels is None else channels.get(channel)

    def channels(self, app_id: str) -> Iterator[tuple[str, int]]:
        for channel, subscribers in self._apps.get(app_id, {}).items():
            yield channel, len(subscribers)

    def apps(self) -> Iterator[tuple[str, Iterator[tuple[str, int]]]]:
        """Every app with local subscribers, and its channels with their subscriber counts."""
        for app_id in list(self._apps):
            yield app_id, self.channels(app_id)

    def entries(self) -> Iterator[tuple[str, str, str]]:
        """Every (app_id, channel, socket_id) held."""
        for app_id, channels in self._apps.items():
            for channel, subscribers in channels.items():
                for socket_id in subscribers:
                    yield app_id, channel, socket_id

    def is_empty(self) -> bool:
        return not self._apps

"""AppDirectory: find an app by id or by key. No network."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from relay.config import AppConfig


class AppDirectory:
    __slots__ = ("_by_id", "_by_key")

    def __init__(self, apps: Iterable[AppConfig]) -> None:
        self._by_id: dict[str, AppConfig] = {}
        self._by_key: dict[str, AppConfig] = {}
        self.replace(apps)

    def replace(self, apps: Iterable[AppConfig]) -> None:
        """Swap in a new set of apps (SIGHUP). Everyone holding this directory sees them at once."""
        self._by_id = {app.id: app for app in apps}
        self._by_key = {app.key: app for app in self._by_id.values()}

    def by_id(self, app_id: str) -> AppConfig | None:
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> AppConfig | None:
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[AppConfig]:
        return iter(self._by_id.values())

"""PresenceViews: per presence channel with local subscribers, the members this node's clients were told of.

Every pusher_internal:member_added / member_removed frame passes here before it reaches local subscribers.
A member_added for a member the clients have is dropped: after an outage a member may be announced by
several nodes, and pusher-js emits pusher:member_added for each. A member_removed always passes (pusher-js
ignores one for a member it does not have; a client that subscribed later may know more than the view).
The view is also what a node compares with the cluster's member list when it heals after an outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

MEMBER_FRAME: Final = b'{"event":"pusher_internal:member_'  # how messages.member_added/removed frames start
ADDED: Final = b'{"event":"pusher_internal:member_added"'
REMOVED: Final = b'{"event":"pusher_internal:member_removed"'


class PresenceViews:
    def __init__(self) -> None:
        # (app_id, channel) -> user_id -> user_info, for presence channels with local subscribers
        self._views: dict[tuple[str, str], dict[str, Any]] = {}

    def start(self, app_id: str, channel: str, members: Mapping[str, Any]) -> None:
        """The channel's first local subscriber was just told `members` (subscription_succeeded)."""
        self._views.setdefault((app_id, channel), dict(members))

    def drop(self, app_id: str, channel: str) -> None:
        """The channel's last local subscriber left."""
        self._views.pop((app_id, channel), None)

    def channels(self) -> list[tuple[str, str]]:
        return list(self._views)

    def members(self, app_id: str, channel: str) -> dict[str, Any] | None:
        view = self._views.get((app_id, channel))
        return None if view is None else dict(view)

    def admits(self, app_id: str, channel: str, frame: bytes) -> bool:
        """Apply a member frame to the channel's view; False for a member_added the clients heard already."""
        view = self._views.get((app_id, channel))
        added = frame.startswith(ADDED)
        if view is None or not (added or frame.startswith(REMOVED)):
            return True
        try:
            data = orjson.loads(orjson.loads(frame)["data"])
            user_id = data["user_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return True  # not one of ours: pass it on untouched
        if not isinstance(user_id, str):
            return True
        if added:
            if user_id in view:
                return False
            view[user_id] = data.get("user_info")
            return True
        view.pop(user_id, None)
        return True

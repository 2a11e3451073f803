"""PresenceViews: member frames reach local clients only when they change what those clients know."""

from __future__ import annotations

from relay.presence_view import PresenceViews
from relay.protocol import messages

APP, ROOM = "1001", "presence-room"


def test_member_added_for_a_known_member_is_dropped() -> None:
    views = PresenceViews()
    views.start(APP, ROOM, {"u1": {"n": 1}})
    assert not views.admits(APP, ROOM, messages.member_added(ROOM, "u1", {"n": 1}))
    assert views.admits(APP, ROOM, messages.member_added(ROOM, "u2", None))
    assert not views.admits(APP, ROOM, messages.member_added(ROOM, "u2", None))
    assert views.members(APP, ROOM) == {"u1": {"n": 1}, "u2": None}


def test_member_removed_always_passes_and_forgets_the_member() -> None:
    views = PresenceViews()
    views.start(APP, ROOM, {"u1": None})
    assert views.admits(APP, ROOM, messages.member_removed(ROOM, "stranger"))
    assert views.admits(APP, ROOM, messages.member_removed(ROOM, "u1"))
    assert views.members(APP, ROOM) == {}
    assert views.admits(APP, ROOM, messages.member_added(ROOM, "u1", None))  # back: announced again


def test_other_frames_and_untracked_channels_pass_untouched() -> None:
    views = PresenceViews()
    assert views.admits(APP, ROOM, messages.member_added(ROOM, "u1", None))  # no local view: not tracked
    views.start(APP, ROOM, {})
    assert views.admits(APP, ROOM, messages.channel_event("update", ROOM, "{}"))
    assert views.admits(APP, ROOM, b'{"event":"pusher_internal:member_added","channel":"presence-room","data":"x"}')
    views.drop(APP, ROOM)
    assert views.channels() == []

"""The `allow` claim's matching: exact names and `*` patterns, nothing else special."""

from __future__ import annotations

import time

import pytest

from relay.jwt.permissions import channel_permitted, matches_pattern


@pytest.mark.parametrize(
    ("allow", "channel", "permitted"),
    [
        (["private-user.42"], "private-user.42", True),
        (["private-user.42"], "private-user.420", False),
        (["presence-room.*"], "presence-room.7", True),
        (["presence-room.*"], "presence-room.", True),
        (["presence-room.*"], "presence-room", False),
        (["presence-room.*"], "private-room.7", False),
        (["*"], "private-encrypted-anything", True),
        (["private-*-chat"], "private-team.1-chat", True),
        (["private-*-chat"], "private-team.1-chat2", False),
        (["private-user.?"], "private-user.4", False),  # only `*` is special
        (["private-user.[0-9]"], "private-user.4", False),
        ([], "private-user.42", False),
        (["private-a", "presence-b.*"], "presence-b.x", True),
        (["a**b"], "ab", True),
    ],
)
def test_channel_permitted(allow: list[str], channel: str, permitted: bool) -> None:
    assert channel_permitted(allow, channel) is permitted


def test_many_stars_do_not_backtrack_exponentially() -> None:
    started = time.perf_counter()
    assert not matches_pattern("*a" * 30 + "*b", "a" * 200)
    assert time.perf_counter() - started < 1.0

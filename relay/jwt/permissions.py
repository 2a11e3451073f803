"""The `allow` claim: the channels a token may join, as exact names and `*` patterns (`presence-room.*`).

A permission list, not a subscription list: holding `private-user.*` subscribes to nothing by itself.
`*` matches any run of characters, dots included; every other character matches itself.
"""

from __future__ import annotations

from collections.abc import Iterable


def channel_permitted(allow: Iterable[str], channel: str) -> bool:
    return any(entry == channel or ("*" in entry and matches_pattern(entry, channel)) for entry in allow)


def matches_pattern(pattern: str, name: str) -> bool:
    """Glob match with `*` only, in O(len(pattern) * len(name)) at worst: no regex backtracking."""
    p = n = 0
    star = -1  # position in pattern after the last `*` seen
    resume = 0  # where in name that `*` would absorb one more character
    while n < len(name):
        if p < len(pattern) and pattern[p] == "*":
            star = p + 1
            resume = n
            p += 1
        elif p < len(pattern) and pattern[p] == name[n]:
            p += 1
            n += 1
        elif star >= 0:
            resume += 1
            n = resume
            p = star
        else:
            return False
    return pattern[p:].strip("*") == ""

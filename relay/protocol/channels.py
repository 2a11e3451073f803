"""Channel kinds and name rules: the one place that knows channel prefixes (docs/protocol.md §4)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

MAX_CHANNEL_NAME_LENGTH: Final = 200
MAX_EVENT_NAME_LENGTH: Final = 200
SERVER_TO_USER_PREFIX: Final = "#server-to-user-"
CLIENT_EVENT_PREFIX: Final = "client-"
_RESERVED_EVENT_PREFIXES: Final = ("pusher:", "pusher_internal:")
_NAME_PATTERN: Final = re.compile(r"\A#?[-a-zA-Z0-9_=@,.;]+\Z")
_CACHE_PREFIXES: Final = ("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-")


class ChannelKind(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "private-encrypted"
    PRESENCE = "presence"
    SERVER_TO_USER = "server-to-user"


@dataclass(frozen=True, slots=True)
class ChannelType:
    kind: ChannelKind
    is_cache: bool

    @property
    def needs_auth(self) -> bool:
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE)

    @property
    def allows_client_events(self) -> bool:
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)


# One immutable ChannelType per (kind, is_cache): channel_type() runs on every subscribe and publish.
_TYPES: Final = {(kind, cache): ChannelType(kind, cache) for kind in ChannelKind for cache in (False, True)}


def channel_type(channel: str) -> ChannelType:
    """Exact prefixes at position 0, longest first (unlike soketi's unanchored regexes)."""
    is_cache = channel.startswith(_CACHE_PREFIXES)
    if channel.startswith("private-encrypted-"):
        return _TYPES[ChannelKind.ENCRYPTED, is_cache]
    if channel.startswith("private-"):
        return _TYPES[ChannelKind.PRIVATE, is_cache]
    if channel.startswith("presence-"):
        return _TYPES[ChannelKind.PRESENCE, is_cache]
    if channel.startswith(SERVER_TO_USER_PREFIX):
        return _TYPES[ChannelKind.SERVER_TO_USER, False]
    return _TYPES[ChannelKind.PUBLIC, is_cache]


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def is_cache(channel: str) -> bool:
    return channel.startswith(_CACHE_PREFIXES)


def channel_name_problem(channel: str) -> str:
    """Why `channel` is not a valid name, or "" when it is. `#` is only allowed for server-to-user."""
    if not channel:
        return "Channel name must not be empty"
    if len(channel) > MAX_CHANNEL_NAME_LENGTH:
        return f"Channel name is longer than {MAX_CHANNEL_NAME_LENGTH} characters"
    if _NAME_PATTERN.match(channel) is None:
        return "Channel name may only contain A-Z, a-z, 0-9 and _ - = @ , . ;"
    if channel.startswith("#") and (
        not channel.startswith(SERVER_TO_USER_PREFIX) or len(channel) == len(SERVER_TO_USER_PREFIX)
    ):
        return "Channel names starting with # are reserved"
    return ""


def server_to_user_channel(user_id: str) -> str:
    return SERVER_TO_USER_PREFIX + user_id


def event_name_problem(event: str) -> str:
    """Why a published event name is refused, or "" (docs/protocol.md §4: ≤200 chars, no reserved prefix)."""
    if not event:
        return "Event name must not be empty"
    if len(event) > MAX_EVENT_NAME_LENGTH:
        return f"Event name is longer than {MAX_EVENT_NAME_LENGTH} characters"
    if event.startswith(_RESERVED_EVENT_PREFIXES):
        return "Event names starting with pusher: or pusher_internal: are reserved"
    return ""

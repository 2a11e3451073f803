"""What a session asks the node to do. Plain values; the node carries them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.protocol.channels import ChannelType
from relay.protocol.ids import UserId


@dataclass(frozen=True, slots=True)
class Member:
    """A presence member: `user_id` compared as a string, `user_info` echoed as received."""

    user_id: UserId
    user_info: Any


@dataclass(frozen=True, slots=True)
class Send:
    frame: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Join:
    """Subscription authorised; the node registers it and answers `subscription_succeeded` (or refuses)."""

    channel: str
    channel_type: ChannelType
    member: Member | None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str
    user_id: UserId | None  # the presence member this socket was on that channel


@dataclass(frozen=True, slots=True)
class PublishClientEvent:
    channel: str
    event: str
    data: Any
    frame: bytes
    user_id: str | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    user_id: UserId
    user_info: Any
    watchlist: tuple[str, ...]


Action = Send | Close | Join | Leave | PublishClientEvent | SignedIn

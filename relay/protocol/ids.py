"""Domain ids, kept apart by type, and socket id generation (docs/protocol.md §1.2)."""

from __future__ import annotations

import re
import secrets
from typing import Final, NewType

SocketId = NewType("SocketId", str)
AppId = NewType("AppId", str)
UserId = NewType("UserId", str)

# ASCII digits only: `\d` would also match other scripts' digits, which no SDK or client sends.
SOCKET_ID_PATTERN: Final = re.compile(r"\A[0-9]+\.[0-9]+\Z")
_SOCKET_ID_PART_LIMIT: Final = 10**10


def new_socket_id() -> SocketId:
    """Two CSPRNG integers: unguessable, since channel-auth signatures are bound to the socket id."""
    return SocketId(f"{secrets.randbelow(_SOCKET_ID_PART_LIMIT)}.{secrets.randbelow(_SOCKET_ID_PART_LIMIT)}")


def is_socket_id(value: str) -> bool:
    return SOCKET_ID_PATTERN.match(value) is not None

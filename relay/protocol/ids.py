"""Domain ids, kept apart by type, and socket id generation (docs/protocol.md §1.2)."""

from __future__ import annotations

import os
import re
from typing import Final, NewType

SocketId = NewType("SocketId", str)
AppId = NewType("AppId", str)
UserId = NewType("UserId", str)

# ASCII digits only: `\d` would also match other scripts' digits, which no SDK or client sends.
SOCKET_ID_PATTERN: Final = re.compile(r"\A[0-9]+\.[0-9]+\Z")
_SOCKET_ID_PART_LIMIT: Final = 10**10
_LOW_64: Final = (1 << 64) - 1


def new_socket_id() -> SocketId:
    """Two CSPRNG integers: unguessable, since channel-auth signatures are bound to the socket id.

    One urandom read of 16 bytes, each half reduced modulo 10^10 (secrets.randbelow read urandom about
    three times per id, 4.7 us of every connect); the bias of 2^64 mod 10^10 is below one part in 10^9."""
    raw = int.from_bytes(os.urandom(16))
    return SocketId(f"{(raw >> 64) % _SOCKET_ID_PART_LIMIT}.{(raw & _LOW_64) % _SOCKET_ID_PART_LIMIT}")


def is_socket_id(value: str) -> bool:
    return SOCKET_ID_PATTERN.match(value) is not None

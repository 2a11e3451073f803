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


# Socket ids are cut from one urandom read of this many ids' bytes: a getrandom system call per connect
# cost ~1.5 us. The bytes are as unguessable as one read per id; a forked worker starts a fresh batch.
_IDS_PER_READ: Final = 256


class _RandomBatch:
    __slots__ = ("data", "offset")

    def __init__(self) -> None:
        self.data = b""
        self.offset = 0

    def reset(self) -> None:
        self.data = b""
        self.offset = 0


_batch: Final = _RandomBatch()
os.register_at_fork(after_in_child=_batch.reset)


def new_socket_id() -> SocketId:
    """Two CSPRNG integers: unguessable, since channel-auth signatures are bound to the socket id.

    16 urandom bytes, each half reduced modulo 10^10 (secrets.randbelow read urandom about three times
    per id, 4.7 us of every connect); the bias of 2^64 mod 10^10 is below one part in 10^9."""
    batch = _batch
    offset = batch.offset
    if offset >= len(batch.data):
        batch.data = os.urandom(16 * _IDS_PER_READ)
        offset = 0
    batch.offset = offset + 16
    raw = int.from_bytes(batch.data[offset : offset + 16])
    return SocketId(f"{(raw >> 64) % _SOCKET_ID_PART_LIMIT}.{(raw & _LOW_64) % _SOCKET_ID_PART_LIMIT}")


def is_socket_id(value: str) -> bool:
    return SOCKET_ID_PATTERN.match(value) is not None

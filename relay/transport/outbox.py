"""Outbound coalescing: frames queued for a connection during one event-loop iteration go out in one write."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None:
        """Write everything queued since the last flush, in order, in one transport.write()."""


class Outbox:
    """Connections with queued frames, flushed once per event-loop iteration.

    One write per connection per iteration instead of one per frame: a fan-out burst or a subscribe
    answer followed by a cached event costs one syscall, and order is kept.
    """

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Flushable] = []
        self._scheduled = False

    def mark(self, connection: Flushable) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for connection in dirty:
            connection.flush()


def write_frames(transport: asyncio.Transport, frames: list[bytes], limit: int) -> bool:
    """Write a connection's queued frames in one call; False (and the socket aborted) once more than `limit`
    bytes wait in its buffer: a client that stops reading must not make us buffer without bound."""
    if transport.is_closing():
        return True
    transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
    if transport.get_write_buffer_size() > limit:
        transport.abort()
        return False
    return True

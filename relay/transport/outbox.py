"""Outbound coalescing: frames queued for a connection during one event-loop iteration go out in one write."""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

from relay import wsframe
from relay.alerts import AlertKind
from relay.config import AppConfig
from relay.metrics import Metrics
from relay.protocol import errors

logger = logging.getLogger(__name__)

# A slow consumer is told with 4100 (pusher-js reconnects after a pause) and then given this long to
# take the notice before its socket is dropped.
SLOW_CONSUMER_CODE: Final = errors.OVER_CAPACITY
SLOW_CONSUMER_GRACE: Final = 2.0


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


class SlowConsumer(Protocol):
    socket_id: str
    app: AppConfig
    close_code: int


def write_frames(transport: asyncio.Transport, frames: list[bytes], limit: int) -> bool:
    """Write a connection's queued frames in one call; False once more than `limit` bytes wait in its
    buffer: a client that stops reading must not make us buffer without bound (see cut_slow_consumer)."""
    if transport.is_closing():
        return True
    transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
    return transport.get_write_buffer_size() <= limit


def cut_slow_consumer(transport: asyncio.Transport, metrics: Metrics, connection: SlowConsumer) -> None:
    """Tell the client that messages were dropped (a pusher:error, then a 4100 close, which pusher-js
    answers by reconnecting after a pause), count it, and drop the socket if it does not read them soon.
    Nothing more is queued for it, so its buffer stays at about `limit` bytes until then."""
    dropped = transport.get_write_buffer_size()
    traffic = metrics.app(connection.app.id)
    traffic.slow_consumer_disconnects += 1
    traffic.slow_consumer_bytes_dropped += dropped
    connection.close_code = SLOW_CONSUMER_CODE
    logger.warning(
        "closed slow consumer: %d bytes were waiting",
        dropped,
        extra={"app_id": connection.app.id, "socket_id": connection.socket_id, "code": SLOW_CONSUMER_CODE},
    )
    metrics.alerts.raise_alert(
        AlertKind.SLOW_CONSUMERS,
        f"app {connection.app.id}: a connection was cut for not reading ({dropped} bytes waiting)",
    )
    message = f"Messages were dropped: the connection did not read them fast enough ({dropped} bytes waiting)"
    notice = wsframe.text_frame(errors.encode_error(SLOW_CONSUMER_CODE, message))
    transport.write(notice + wsframe.close_frame(SLOW_CONSUMER_CODE, "Slow consumer"))
    transport.close()
    asyncio.get_running_loop().call_later(SLOW_CONSUMER_GRACE, transport.abort)

"""Sliced fan-out: a big channel's event is handed to its local subscribers a slice per loop iteration.

Handing one event to 20,000 subscribers in one go holds the event loop for the whole burst of writes
(~150 ms on a small machine), so pings, new connections and API requests wait behind it. A channel with
more than `slice_size` local subscribers gets each event in slices of that many, with the loop free in
between (each slice's writes are flushed by the outbox before the next slice runs).

Order per subscriber is kept: a channel's later events wait in its queue behind the running fan-out
(also small ones, also once the channel shrank). Each event goes to the subscribers the channel had when
it was published, as an unsliced fan-out would: one that leaves meanwhile gets none of the rest (looked
up in the live registry mapping), one that joins meanwhile does not get it (it may have been sent the
event already, as a cache channel's last event).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from relay.node_seams import Connection

# Subscribers written per loop iteration; with the outbox's one write per connection, about 2 ms of a
# 2-core machine's time. Measured with 8,000 subscribers (bench/micro/server_costs.py): a ping's p99
# round trip during fan-outs was 88-186 ms with slices of 1,000 and 31-46 ms with 250, at the same CPU
# per frame. Smaller channels are fanned out in one go, as before.
FANOUT_SLICE: Final = 250

Channel = tuple[str, str]  # (app_id, channel)


class _Event:
    __slots__ = ("accepted_at", "live", "skip", "targets", "wire")

    def __init__(self, wire: bytes, skip: str, accepted_at: float, live: dict[str, Connection]) -> None:
        self.wire = wire
        self.skip = skip  # the publisher's socket_id (except_socket_id), or ""
        self.accepted_at = accepted_at
        self.live = live  # the registry's own mapping: who is subscribed now
        self.targets = list(live)  # who was subscribed when the event was published (8 bytes each)


class SlicedFanout:
    """The node's fan-out to channels above `slice_size` local subscribers, and to those still draining."""

    __slots__ = ("_queues", "_written", "slice_size")

    def __init__(self, written: Callable[[float], None]) -> None:
        self.slice_size = FANOUT_SLICE
        self._written = written  # called once an event's last slice is flushed, with its accepted_at
        # Channels with a fan-out in progress, and their events in order (the running one first).
        self._queues: dict[Channel, deque[_Event]] = {}

    def takes(self, channel: Channel, subscribers: int) -> bool:
        """Whether an event for `channel` must go through here: it is big, or its earlier events still run."""
        return subscribers > self.slice_size or channel in self._queues

    def send(
        self, channel: Channel, subscribers: dict[str, Connection], wire: bytes, skip: str, accepted_at: float
    ) -> None:
        """Fan out to `subscribers`, the channel's live registry mapping, now or after its earlier events."""
        event = _Event(wire, skip, accepted_at, subscribers)
        queue = self._queues.get(channel)
        if queue is not None:
            queue.append(event)  # after the running fan-out's last slice
            return
        self._queues[channel] = deque((event,))
        self._slice(channel, event, 0)

    def in_progress(self) -> int:
        """Channels with a sliced fan-out running (for tests and gauges)."""
        return len(self._queues)

    def _slice(self, channel: Channel, event: _Event, start: int) -> None:
        end = start + self.slice_size
        wire, skip, live = event.wire, event.skip, event.live
        for socket_id in event.targets[start:end]:
            connection = live.get(socket_id)  # None: it left since the publish
            if connection is not None and socket_id != skip:
                connection.send_wire(wire)
        loop = asyncio.get_running_loop()
        if end < len(event.targets):
            # call_soon runs after the outbox flush this slice scheduled, one loop iteration later.
            loop.call_soon(self._slice, channel, event, end)
            return
        if event.accepted_at:
            loop.call_soon(self._written, event.accepted_at)
        queue = self._queues[channel]
        queue.popleft()
        if queue:
            loop.call_soon(self._slice, channel, queue[0], 0)
        else:
            del self._queues[channel]

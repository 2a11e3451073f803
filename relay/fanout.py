"""Sliced fan-out: a big channel's event is handed to its local subscribers a slice per loop iteration.

Handing one event to 20,000 subscribers in one go holds the event loop for the whole burst of writes
(~150 ms on a small machine), so pings, new connections and API requests wait behind it. A channel with
more than `slice_size` local subscribers gets each event in slices of that many, with the loop free in
between (each slice's writes are flushed by the outbox before the next slice runs).

Order per subscriber is kept: a channel's later events wait in its queue behind the running fan-out
(also small ones, also once the channel shrank). Each event goes to the subscribers the channel has
when its fan-out starts; one that leaves meanwhile gets none of the rest (checked against the live
registry mapping), one that joins meanwhile gets the channel's next event, not this one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from relay.node_seams import Connection
from relay.registry import ChannelRegistry

# Subscribers written per loop iteration; with the outbox's one write per connection, about 2 ms of a
# 2-core machine's time. Measured with 8,000 subscribers (bench/micro/server_costs.py): a ping's p99
# round trip during fan-outs was 88-186 ms with slices of 1,000 and 31-46 ms with 250, at the same CPU
# per frame. Smaller channels are fanned out in one go, as before.
FANOUT_SLICE: Final = 250

Channel = tuple[str, str]  # (app_id, channel)


class _Event:
    __slots__ = ("accepted_at", "skip", "wire")

    def __init__(self, wire: bytes, skip: str, accepted_at: float) -> None:
        self.wire = wire
        self.skip = skip  # the publisher's socket_id (except_socket_id), or ""
        self.accepted_at = accepted_at


class SlicedFanout:
    """The node's fan-out to channels above `slice_size` local subscribers, and to those still draining."""

    __slots__ = ("_queues", "_registry", "_written", "slice_size")

    def __init__(self, registry: ChannelRegistry[Connection], written: Callable[[float], None]) -> None:
        self.slice_size = FANOUT_SLICE
        self._registry = registry
        self._written = written  # called once an event's last slice is flushed, with its accepted_at
        # Channels with a fan-out in progress, and their events in order (the running one first).
        self._queues: dict[Channel, deque[_Event]] = {}

    def takes(self, channel: Channel, subscribers: int) -> bool:
        """Whether an event for `channel` must go through here: it is big, or its earlier events still run."""
        return subscribers > self.slice_size or channel in self._queues

    def send(self, channel: Channel, wire: bytes, skip: str, accepted_at: float) -> None:
        event = _Event(wire, skip, accepted_at)
        queue = self._queues.get(channel)
        if queue is not None:
            queue.append(event)  # after the running fan-out's last slice
            return
        self._queues[channel] = deque((event,))
        self._begin(channel)

    def in_progress(self) -> int:
        """Channels with a sliced fan-out running (for tests and gauges)."""
        return len(self._queues)

    def _begin(self, channel: Channel) -> None:
        """Start the channel's oldest queued event with the subscribers it has now."""
        queue = self._queues[channel]
        while queue:
            subscribers = self._registry.subscribers(*channel)
            if subscribers:
                event = queue[0]
                self._slice(channel, event, subscribers, list(subscribers.items()), 0)
                return
            queue.popleft()  # nobody left to tell
        del self._queues[channel]

    def _slice(
        self,
        channel: Channel,
        event: _Event,
        live: dict[str, Connection],
        targets: list[tuple[str, Connection]],
        start: int,
    ) -> None:
        end = start + self.slice_size
        wire, skip = event.wire, event.skip
        for socket_id, connection in targets[start:end]:
            # `live` is the registry's own mapping: a subscriber that left since the start is not in it.
            if socket_id != skip and socket_id in live:
                connection.send_wire(wire)
        loop = asyncio.get_running_loop()
        if end < len(targets):
            # call_soon runs after the outbox flush this slice scheduled, one loop iteration later.
            loop.call_soon(self._slice, channel, event, live, targets, end)
            return
        if event.accepted_at:
            loop.call_soon(self._written, event.accepted_at)
        queue = self._queues[channel]
        queue.popleft()
        if queue:
            loop.call_soon(self._begin, channel)
        else:
            del self._queues[channel]

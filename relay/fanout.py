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

Events that queued up while a fan-out ran, and went to the same subscribers (the usual case at a high
event rate), go out together in the next pass: each slice writes all of them to its subscribers, so the
outbox still sends one write per connection per loop iteration. Without that, slicing cost a 1,000
subscriber channel 95 % of its top delivery rate (bench fanout-max: 2.6M msg/s before slicing, 125k
with slices of one event each): one write per frame instead of one per connection and iteration.
"""

from __future__ import annotations

import asyncio
import itertools
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
        self._slice(channel, self._next_pass(channel), 0)

    def in_progress(self) -> int:
        """Channels with a sliced fan-out running (for tests and gauges)."""
        return len(self._queues)

    def _next_pass(self, channel: Channel) -> list[_Event]:
        """The queue's first event and every one after it that goes to the same subscribers, in order."""
        queue = self._queues[channel]
        first = queue[0]
        batch = [first]
        for event in itertools.islice(queue, 1, None):
            # Equal lists of the same str objects: compared by identity in C, cheap next to the writes.
            if event.live is not first.live or event.targets != first.targets:
                break
            batch.append(event)
        return batch

    def _slice(self, channel: Channel, batch: list[_Event], start: int) -> None:
        end = start + self.slice_size
        first = batch[0]
        live = first.live
        if len(batch) == 1:
            wire, skip = first.wire, first.skip
            for socket_id in first.targets[start:end]:
                connection = live.get(socket_id)  # None: it left since the publish
                if connection is not None and socket_id != skip:
                    connection.send_wire(wire)
        else:
            for socket_id in first.targets[start:end]:
                connection = live.get(socket_id)
                if connection is not None:
                    for event in batch:
                        if socket_id != event.skip:
                            connection.send_wire(event.wire)
        loop = asyncio.get_running_loop()
        if end < len(first.targets):
            # call_soon runs after the outbox flush this slice scheduled, one loop iteration later.
            loop.call_soon(self._slice, channel, batch, end)
            return
        queue = self._queues[channel]
        for event in batch:
            if event.accepted_at:
                loop.call_soon(self._written, event.accepted_at)
            queue.popleft()
        if queue:
            loop.call_soon(self._start_next, channel)
        else:
            del self._queues[channel]

    def _start_next(self, channel: Channel) -> None:
        # The batch is formed when the pass starts, so it takes every event queued until then.
        self._slice(channel, self._next_pass(channel), 0)

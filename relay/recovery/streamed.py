"""StreamRecovery: recovery across nodes, from the cluster-wide history an adapter keeps (docs/recovery.md,
"Several nodes"). The adapter numbers each event of a recovering channel in the channel's history (a Redis
Stream); this node only keeps, per connection, the newest id it provably received, and, per channel, the
newest id it delivered."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from relay.adapters.base import Envelope, HistoryStore, Position, Recovered, Retention
from relay.config import AppConfig
from relay.protocol.actions import Member
from relay.recovery.history import with_event_id
from relay.recovery.identity import GAP_MEMORY_WINDOWS, Departure, ReturnKey, Watch
from relay.recovery.replay import SWEEP_INTERVAL, RecoveringConnection, Recovery, gap_event, wants_recovery

# An event id "<epoch>-<seq>" as one int that orders like the history: epoch above, seq below.
SEQ_BITS: Final = 40
# The cluster-wide history outlives its last event by this many windows: a user back within the window may
# still be owed events from just before it left (the ones its last ping did not confirm).
HISTORY_WINDOWS: Final = 2
# relay:gap's reason when the user is known to be back but the history cannot be read (Redis unreachable).
UNAVAILABLE: Final = "unavailable"


def position_of(event_id: str) -> int:
    epoch, _, seq = event_id.partition("-")
    return (int(epoch) << SEQ_BITS) | int(seq)


def event_id_of(position: int) -> str:
    return f"{position >> SEQ_BITS}-{position & ((1 << SEQ_BITS) - 1)}"


@dataclass(slots=True)
class ChannelPosition:
    last: int = 0  # the newest history position delivered on this node
    subscribers: int = 0


class StreamRecovery(Recovery):
    def __init__(self, store: HistoryStore) -> None:
        super().__init__()
        self.store = store
        self.positions: dict[tuple[str, str], ChannelPosition] = {}

    @property
    def active(self) -> bool:
        return bool(self.positions)

    def holds(self, app_id: str, channel: str) -> bool:
        return False  # the history is in the store: nothing here needs the channel's events after its last leave

    def retention(self, app: AppConfig, channel: str) -> Retention | None:
        if not wants_recovery(app, channel):
            return None
        return Retention(app.recovery_max_events, int(app.recovery_window * HISTORY_WINDOWS * 1000))

    def record(self, envelope: Envelope) -> bytes:
        if not envelope.event_id:
            return envelope.frame  # not kept (published while Redis was away, or not recovering)
        tracked = self.positions.get((envelope.app_id, envelope.channel))
        if tracked is not None:
            tracked.last = position_of(envelope.event_id)
        return with_event_id(envelope.frame, envelope.event_id)

    # Subscriptions ---------------------------------------------------------------------------------

    def joined(
        self, connection: RecoveringConnection, channel: str, member: Member | None
    ) -> Coroutine[Any, Any, None] | None:
        app = connection.app
        if not wants_recovery(app, channel):
            return None
        tracked = self.positions.setdefault((app.id, channel), ChannelPosition())
        tracked.subscribers += 1
        user_id = member.user_id if member is not None else connection.session.user_id
        if user_id is None:
            return None  # anonymous: nobody to recognise on return
        key: ReturnKey = (app.id, user_id, channel)
        now = time.monotonic()
        known = self.returns.returning(key, connection.socket_id, now, "")
        if not self.store.keeps_history:
            self._unavailable(connection, channel, known)
            self.returns.watch(key, connection.socket_id, Watch(user_id, confirmed=tracked.last))
            return None
        # Live events for this connection wait behind the replay; nothing was sent since subscription_succeeded.
        self.holding.setdefault((app.id, channel), {})[connection.socket_id] = []
        fallback = None
        if known is not None:
            fallback = Position(event_id_of(known.confirmed), known.socket_id, int((now - known.at) * 1000))
        return self._recover(connection, key, fallback, known)

    async def _recover(
        self, connection: RecoveringConnection, key: ReturnKey, fallback: Position | None, known: Departure | None
    ) -> None:
        app_id, user_id, channel = key
        try:
            window_ms = int(connection.app.recovery_window * 1000)
            answer = await self.store.recover(app_id, channel, user_id, connection.socket_id, window_ms, fallback)
        finally:
            held = self._release(app_id, channel, connection.socket_id)
        if held is None:
            return  # the connection left (or ended) while the history was read
        if answer is None:  # the store stopped answering meanwhile
            self._unavailable(connection, channel, known)
            start = self.positions[(app_id, channel)].last
            for _, wire in held:
                connection.send_wire(wire)
        else:
            start = self._answer(connection, channel, answer, held)
        watch = Watch(user_id, confirmed=start)
        self.returns.watch(key, connection.socket_id, watch)
        self._confirmed(connection, channel, watch)

    def _answer(
        self, connection: RecoveringConnection, channel: str, answer: Recovered, held: list[tuple[int, bytes]]
    ) -> int:
        """Send the replay (or relay:gap), then the held live events it did not include; returns the position
        the connection starts from."""
        last = position_of(answer.last_id)
        if answer.kind == "replay" and answer.previous is not None:
            for event in answer.events:
                if event.except_socket_id != answer.previous.socket_id:
                    connection.send(with_event_id(event.frame, event.event_id))
                    self.replayed += 1
            for position, wire in held:
                if not position or position > last:  # the others were in the replay
                    connection.send_wire(wire)
            if answer.events and not any(position >= last for position, _ in held):
                # Replayed events may still be on their way here through pub/sub: drop them (hold()).
                self.fences.setdefault((connection.app.id, channel), {})[connection.socket_id] = last
            return position_of(answer.previous.event_id)  # unconfirmed until this connection answers a ping
        if answer.kind == "gap":
            connection.send(gap_event(channel, answer.reason))
            self.gaps += 1
        for _, wire in held:
            connection.send_wire(wire)
        # Events it gets live from here on are not confirmed yet, the first held one included.
        earliest = min((position for position, _ in held if position), default=last + 1)
        return min(last, earliest - 1)

    def _unavailable(self, connection: RecoveringConnection, channel: str, known: Departure | None) -> None:
        if known is not None:  # a return this node knows of, and the history cannot be read: say so
            connection.send(gap_event(channel, UNAVAILABLE))
            self.gaps += 1

    def _release(self, app_id: str, channel: str, socket_id: str) -> list[tuple[int, bytes]] | None:
        held = self.holding.get((app_id, channel))
        if held is None:
            return None
        frames = held.pop(socket_id, None)
        if not held:
            del self.holding[(app_id, channel)]
        return frames

    def _channel_left(self, connection: RecoveringConnection, channel: str) -> None:
        key = (connection.app.id, channel)
        self._release(*key, connection.socket_id)
        fenced = self.fences.get(key)
        if fenced is not None:
            fenced.pop(connection.socket_id, None)
            if not fenced:
                del self.fences[key]
        tracked = self.positions.get(key)
        if tracked is not None:
            tracked.subscribers -= 1
            if tracked.subscribers <= 0:
                del self.positions[key]

    def _depart(self, connection: RecoveringConnection, key: ReturnKey, watch: Watch, now: float) -> None:
        """Remembered here (for Redis outages) and in the store, for every node."""
        memory = connection.app.recovery_window * GAP_MEMORY_WINDOWS
        self.returns.depart(key, Departure(watch.confirmed, connection.socket_id, now, "", now + memory))
        position = Position(event_id_of(watch.confirmed), connection.socket_id)
        self.store.record_departure(key[0], key[2], key[1], position, int(memory * 1000))

    def _forget(self, connection: RecoveringConnection, key: ReturnKey) -> None:
        self.store.forget_position(key[0], key[2], key[1], connection.socket_id)

    def _confirmed(self, connection: RecoveringConnection, channel: str, watch: Watch) -> None:
        # Kept as long as a departure: a node that dies with it leaves it as that connection's departure.
        ttl_ms = int(connection.app.recovery_window * GAP_MEMORY_WINDOWS * 1000)
        position = Position(event_id_of(watch.confirmed), connection.socket_id)
        self.store.record_position(connection.app.id, channel, watch.user_id, position, ttl_ms)

    def _last_delivered(self, app_id: str, channel: str) -> int | None:
        tracked = self.positions.get((app_id, channel))
        return None if tracked is None else tracked.last

    def sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_INTERVAL:
            self._swept_at = now
            self.returns.forget_departures(now)

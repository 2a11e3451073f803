"""Recovery: what the node calls so a returning client gets the events it missed (docs/recovery.md).

The node records every channel event through `record` (only channels with a history pay for it),
and reports subscriptions (`joined`, `left`), ended connections (`disconnected`), its keep-alive
pings (`ticked`) and the client's frames (`received`, for the pongs that confirm what was written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, Protocol, TypeVar

import orjson

from relay.adapters.base import Envelope, Retention
from relay.config import AppConfig
from relay.metrics import Metrics
from relay.protocol import messages
from relay.protocol.actions import Action, Member, Send
from relay.recovery.history import ChannelHistory
from relay.recovery.identity import GAP_MEMORY_WINDOWS, Departure, ReturnKey, Returns, Watch

GAP_EVENT: Final = "relay:gap"
C = TypeVar("C")
# Idle histories and old departures are looked for this often (seconds), not on every tick.
SWEEP_INTERVAL: Final = 5.0


class RecoveringSession(Protocol):
    @property
    def user_id(self) -> str | None: ...


class RecoveringConnection(Protocol):
    socket_id: str
    app: AppConfig

    @property
    def session(self) -> RecoveringSession: ...

    def send(self, frame: bytes) -> None: ...

    def send_wire(self, wire: bytes) -> None: ...


def wants_recovery(app: AppConfig, channel: str) -> bool:
    return app.recovery and (not app.recovery_channels or channel.startswith(app.recovery_channels))


def gap_event(channel: str, reason: str) -> bytes:
    """An ordinary channel event, bound with Echo's `.listen('.relay:gap', ...)`: refetch, events were lost.
    `reason`: "window" (back after recovery_window) or "history" (the missed events are no longer kept)."""
    data = orjson.dumps({"reason": reason}).decode()
    return messages.channel_event(GAP_EVENT, channel, data)


class Recovery:
    def __init__(self, released: Callable[[str, str], None] | None = None) -> None:
        # Told (app_id, channel) when a history is dropped: a node with Redis keeps a channel with a history
        # subscribed, so events published on other nodes while its subscribers are away are recorded.
        self.released = released
        self.histories: dict[tuple[str, str], ChannelHistory] = {}
        self.returns = Returns()
        self._swept_at = 0.0
        self.replayed = 0
        self.gaps = 0
        # (app_id, channel) -> socket_id -> its live frames (with their history positions) held back while
        # its replay is read from the cluster-wide history; empty on a single node, where it is immediate.
        self.holding: dict[tuple[str, str], dict[str, list[tuple[int, bytes]]]] = {}
        # (app_id, channel) -> socket_id -> the newest position its replay included. A live event the history
        # read already returned can reach this node after that read's answer (the pub/sub connection is not
        # the one the history was read on); such late events are dropped for that connection, until the
        # first newer one shows that the channel's (ordered) pub/sub stream is past the replay.
        self.fences: dict[tuple[str, str], dict[str, int]] = {}

    def register_metrics(self, metrics: Metrics) -> None:
        metrics.add_gauge(
            "relay_recovery_history_bytes", "Bytes of event frames kept for recovery", ("app_id",), self._bytes
        )
        metrics.add_gauge("relay_recovery_history_events", "Events kept for recovery", ("app_id",), self._events)
        metrics.add_total(
            "relay_recovery_replayed_events", "Events replayed to returning clients", lambda: self.replayed
        )
        metrics.add_total("relay_recovery_gaps", "relay:gap events sent", lambda: self.gaps)

    def _bytes(self) -> list[tuple[tuple[str, ...], float]]:
        totals: dict[str, float] = {}
        for (app_id, _), history in self.histories.items():
            totals[app_id] = totals.get(app_id, 0) + history.bytes
        return [((app_id,), value) for app_id, value in sorted(totals.items())]

    def _events(self) -> list[tuple[tuple[str, ...], float]]:
        totals: dict[str, float] = {}
        for (app_id, _), history in self.histories.items():
            totals[app_id] = totals.get(app_id, 0) + len(history.entries)
        return [((app_id,), value) for app_id, value in sorted(totals.items())]

    def holds(self, app_id: str, channel: str) -> bool:
        return (app_id, channel) in self.histories

    @property
    def active(self) -> bool:
        """False while no channel keeps a history: the node then skips `record` altogether."""
        return bool(self.histories)

    # Events ----------------------------------------------------------------------------------------

    def retention(self, app: AppConfig, channel: str) -> Retention | None:
        """For the adapter: how to keep this channel's events cluster-wide; None: the node keeps them itself."""
        return None

    def hold(self, envelope: Envelope, position: int, wire: bytes, subscribers: dict[str, C]) -> dict[str, C]:
        """The subscribers to write `wire` to now; the others (their replay is being read) get it after it,
        and those whose replay included it already do not get it again."""
        key = (envelope.app_id, envelope.channel)
        fenced = self.fences.get(key)
        if fenced is not None:
            subscribers = self._past_fences(key, fenced, position, subscribers)
        held = self.holding.get(key)
        if not held or held.keys().isdisjoint(subscribers):
            return subscribers
        for socket_id, frames in held.items():
            if socket_id in subscribers and socket_id != envelope.except_socket_id:
                frames.append((position, wire))
        return {socket_id: s for socket_id, s in subscribers.items() if socket_id not in held}

    def _past_fences(
        self, key: tuple[str, str], fenced: dict[str, int], position: int, subscribers: dict[str, C]
    ) -> dict[str, C]:
        if not position:
            return subscribers  # not numbered (published while Redis was away): never in a replay
        replayed = [socket_id for socket_id, last in fenced.items() if position <= last]
        for socket_id, last in list(fenced.items()):
            if position > last:
                del fenced[socket_id]  # the stream is past its replay: nothing more to drop
        if not fenced:
            del self.fences[key]
        if not replayed:
            return subscribers
        return {socket_id: s for socket_id, s in subscribers.items() if socket_id not in replayed}

    def record(self, envelope: Envelope) -> bytes:
        """The frame to fan out: with its event id when the channel keeps a history, else as it came."""
        history = self.histories.get((envelope.app_id, envelope.channel))
        if history is None or not _is_channel_event(envelope.frame):
            return envelope.frame
        return history.append(envelope.frame, envelope.except_socket_id, time.monotonic())

    # Subscriptions ---------------------------------------------------------------------------------

    def joined(
        self, connection: RecoveringConnection, channel: str, member: Member | None
    ) -> Coroutine[Any, Any, None] | None:
        """Right after subscription_succeeded was queued: replay what a returning user missed, or say it is lost.
        Returns a coroutine to await when the replay must be read elsewhere first (several nodes)."""
        app = connection.app
        if not wants_recovery(app, channel):
            return None
        now = time.monotonic()
        history = self._history(app, channel, now)  # kept for every subscriber: the cost is per event, not per user
        user_id = member.user_id if member is not None else connection.session.user_id
        if user_id is None:
            return None  # anonymous: nobody to recognise on return
        key: ReturnKey = (app.id, user_id, channel)
        previous = self.returns.returning(key, connection.socket_id, now, history.epoch)
        start = history.last_seq
        if previous is not None:
            start = self._replay(connection, channel, history, previous, now)
        self.returns.watch(key, connection.socket_id, Watch(user_id, confirmed=start))
        return None

    def _replay(
        self, connection: RecoveringConnection, channel: str, history: ChannelHistory, previous: Departure, now: float
    ) -> int:
        """Send the missed events (or relay:gap); returns the position the new connection starts from."""
        if now - previous.at > connection.app.recovery_window:
            return self._gap(connection, channel, "window", history)
        missed = history.since(previous.confirmed, now) if previous.epoch == history.epoch else None
        if missed is None:
            return self._gap(connection, channel, "history", history)
        for entry in missed:
            if entry.except_socket_id != previous.socket_id:
                connection.send(entry.frame)
                self.replayed += 1
        return previous.confirmed  # unconfirmed until this connection answers a ping

    def _gap(self, connection: RecoveringConnection, channel: str, reason: str, history: ChannelHistory) -> int:
        connection.send(gap_event(channel, reason))
        self.gaps += 1
        return history.last_seq

    def left(self, connection: RecoveringConnection, channel: str) -> None:
        """Any subscription's end. An unsubscribe by the client (its connection still open) means the user
        chose to go, so a later subscribe is no return; `disconnected` has already kept ended connections'."""
        self._channel_left(connection, channel)
        watch = self.returns.watches.get(connection.socket_id, {}).get(channel)
        if watch is not None:
            key: ReturnKey = (connection.app.id, watch.user_id, channel)
            self.returns.unwatch(key, connection.socket_id)
            self._forget(connection, key)

    def _channel_left(self, connection: RecoveringConnection, channel: str) -> None:
        history = self.histories.get((connection.app.id, channel))
        if history is not None:
            history.subscribers = max(0, history.subscribers - 1)
            history.last_used = time.monotonic()

    def disconnected(self, connection: RecoveringConnection) -> None:
        """The connection ended: remember where it stood on each channel, unless the user is still there."""
        channels = self.returns.watches.get(connection.socket_id)
        if not channels:
            return
        now = time.monotonic()
        for channel, watch in list(channels.items()):
            key: ReturnKey = (connection.app.id, watch.user_id, channel)
            if self.returns.unwatch(key, connection.socket_id):
                self._depart(connection, key, watch, now)
            else:
                self._forget(connection, key)

    def _forget(self, connection: RecoveringConnection, key: ReturnKey) -> None:
        """The connection's position on the channel no longer counts, and there is no departure to record."""

    def _depart(self, connection: RecoveringConnection, key: ReturnKey, watch: Watch, now: float) -> None:
        history = self.histories.get((key[0], key[2]))
        if history is not None:
            forget_at = now + connection.app.recovery_window * GAP_MEMORY_WINDOWS
            departure = Departure(watch.confirmed, connection.socket_id, now, history.epoch, forget_at)
            self.returns.depart(key, departure)

    # Keep-alive: a pong proves every frame written before its ping arrived --------------------------

    def ticked(self, connection: RecoveringConnection, actions: Iterable[Action]) -> None:
        channels = self.returns.watches.get(connection.socket_id)
        if channels and any(isinstance(action, Send) and action.frame == messages.PING for action in actions):
            for channel, watch in channels.items():
                last = self._last_delivered(connection.app.id, channel)
                if last is not None:
                    watch.pending = last

    def _last_delivered(self, app_id: str, channel: str) -> int | None:
        """The newest position of the channel written to its subscribers here; None when not tracked."""
        history = self.histories.get((app_id, channel))
        return None if history is None else history.last_seq

    def received(self, connection: RecoveringConnection, raw: bytes | str) -> None:
        channels = self.returns.watches.get(connection.socket_id)
        if not channels or not _is_pong(raw):
            return
        for channel, watch in channels.items():
            if watch.pending is not None:
                watch.confirmed = max(watch.confirmed, watch.pending)
                watch.pending = None
                self._confirmed(connection, channel, watch)

    def _confirmed(self, connection: RecoveringConnection, channel: str, watch: Watch) -> None:
        """The connection's confirmed position on the channel moved (or was set)."""

    # Bounds ----------------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Called often (every node tick); works every SWEEP_INTERVAL: ages out events, idle histories
        (nobody here for a window) and departures past their gap memory."""
        now = time.monotonic()
        if now - self._swept_at < SWEEP_INTERVAL:
            return
        self._swept_at = now
        for key, history in list(self.histories.items()):
            history.trim(now)
            if history.subscribers <= 0 and now - history.last_used > history.max_age:
                del self.histories[key]
                if self.released is not None:
                    self.released(*key)
        self.returns.forget_departures(now)

    def _history(self, app: AppConfig, channel: str, now: float) -> ChannelHistory:
        history = self.histories.get((app.id, channel))
        if history is None:
            history = ChannelHistory(app.recovery_max_events, app.recovery_max_bytes, app.recovery_window)
            self.histories[(app.id, channel)] = history
        else:  # the app's settings may have been reloaded since
            history.max_events = app.recovery_max_events
            history.max_bytes = app.recovery_max_bytes
            history.max_age = app.recovery_window
        history.subscribers += 1
        history.last_used = now
        return history


def _is_channel_event(frame: bytes) -> bool:
    # member_added/member_removed and other protocol events are never replayed: subscription_succeeded
    # already carries the presence members as they are now.
    return not frame.startswith((b'{"event":"pusher:', b'{"event":"pusher_internal:'))


def _is_pong(raw: bytes | str) -> bool:
    return ('"pusher:pong"' in raw) if isinstance(raw, str) else (b'"pusher:pong"' in raw)

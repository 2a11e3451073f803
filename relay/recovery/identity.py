"""Who is returning: each connection's position on its recovering channels, and the positions of
connections that ended, by (app, user, channel), for as long as a return may still be told a gap."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

# Ended connections remembered per node, oldest forgotten first; a forgotten user is a new visitor.
MAX_DEPARTURES: Final = 100_000
# A return this many windows after the departure still gets relay:gap; later, nothing is said.
GAP_MEMORY_WINDOWS: Final = 10

ReturnKey = tuple[str, str, str]  # (app_id, user_id, channel)


@dataclass(slots=True)
class Watch:
    """One connection's position on one recovering channel."""

    user_id: str
    # The newest event the client proved it received: it was written before a ping the client answered.
    confirmed: int
    # The newest event written before the ping that is not answered yet.
    pending: int | None = None


@dataclass(frozen=True, slots=True)
class Departure:
    confirmed: int
    socket_id: str
    at: float
    epoch: str  # the channel history's epoch then; another one now means its events are gone
    forget_at: float = 0.0


class Returns:
    def __init__(self) -> None:
        self.watches: dict[str, dict[str, Watch]] = {}  # socket_id -> channel -> Watch
        self.present: dict[ReturnKey, set[str]] = {}  # who is subscribed now, by user
        self.departures: OrderedDict[ReturnKey, Departure] = OrderedDict()

    def watch(self, key: ReturnKey, socket_id: str, watch: Watch) -> None:
        self.watches.setdefault(socket_id, {})[key[2]] = watch
        self.present.setdefault(key, set()).add(socket_id)

    def unwatch(self, key: ReturnKey, socket_id: str) -> bool:
        """Forget one subscription; True when it was the user's last one on the channel here."""
        channels = self.watches.get(socket_id)
        if channels is not None:
            channels.pop(key[2], None)
            if not channels:
                del self.watches[socket_id]
        sockets = self.present.get(key)
        if sockets is None:
            return False
        sockets.discard(socket_id)
        if sockets:
            return False
        del self.present[key]
        return True

    def depart(self, key: ReturnKey, departure: Departure) -> None:
        self.departures.pop(key, None)
        self.departures[key] = departure
        while len(self.departures) > MAX_DEPARTURES:
            self.departures.popitem(last=False)

    def returning(self, key: ReturnKey, socket_id: str, now: float, epoch: str) -> Departure | None:
        """Where the user's previous connection on the channel stood: the one that ended (taken), or, when the
        user is still subscribed on another connection (maybe a dead one not noticed yet, maybe another tab),
        the least confirmed of those."""
        departure = self.departures.pop(key, None)
        if departure is not None:
            return departure
        others = [other for other in self.present.get(key, ()) if other != socket_id]
        if not others:
            return None
        positions = [(self.watches[other][key[2]].confirmed, other) for other in others]
        confirmed, other = min(positions)
        return Departure(confirmed, other, now, epoch)

    def forget_departures(self, now: float) -> None:
        # Oldest first; apps with different windows make this approximate, MAX_DEPARTURES keeps it bounded.
        while self.departures:
            key, departure = next(iter(self.departures.items()))
            if departure.forget_at > now:
                return
            del self.departures[key]

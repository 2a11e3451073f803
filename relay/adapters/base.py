"""The two seams between a node and the rest of the cluster.

`Broadcaster` carries envelopes to every node (this one included); `ClusterState` answers questions
that span nodes: presence membership ("is this the user's first/last connection anywhere?"),
subscription counts, connection quotas and cache channels' last event. The node implements
`ClusterListener`, through which an adapter hands back deliveries and what it learned on its own
(a dead node's members, the need to resynchronise after an outage).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from relay.protocol.ids import AppId, SocketId, UserId


class EnvelopeKind(enum.IntEnum):
    EVENT = 1  # a pre-built frame for every subscriber of `channel`, except `except_socket_id`
    TERMINATE_USER = 2  # close every connection signed in as `user_id`


@dataclass(frozen=True, slots=True)
class Envelope:
    """What crosses nodes. `frame` is the finished JSON frame, encoded once by the publisher."""

    kind: EnvelopeKind
    app_id: str
    channel: str = ""
    frame: bytes = b""
    except_socket_id: str = ""
    user_id: str = ""
    # Event-loop time at which this node accepted the publish; 0 once it crossed Redis. Only for the
    # publish-to-write histogram.
    accepted_at: float = 0.0
    # Set by the node on events of a recovering channel: an adapter with a cluster-wide history
    # (HistoryStore) keeps the event there and numbers it (docs/recovery.md, "Several nodes").
    retention: Retention | None = None
    # The event's id in that history, "<epoch>-<seq>", set by the adapter on delivery; "" for none.
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class Retention:
    """How a recovering channel's cluster-wide history is bounded (the app's recovery settings)."""

    max_events: int
    ttl_ms: int  # the history goes this long after its last event


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """A cache channel's last event (docs/protocol.md §2.7)."""

    event: str
    data: str
    expires_at: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class LocalSubscription:
    """One subscription held by this node, for resynchronising cluster state after an outage."""

    app_id: str
    channel: str
    socket_id: str
    user_id: str | None = None  # presence only
    user_info: Any = None


@dataclass(frozen=True, slots=True)
class LocalSnapshot:
    connections: Mapping[str, int]  # app_id -> open connections on this node
    subscriptions: tuple[LocalSubscription, ...]


class ClusterListener(Protocol):
    """Implemented by the node."""

    def deliver(self, envelope: Envelope) -> None:
        """Called on every node for every envelope, in publish order per channel. Must not block."""

    def member_lost(self, app_id: str, channel: str, user_id: str) -> None:
        """A presence member vanished with a dead node; called on exactly one live node."""

    def channel_lost(self, app_id: str, channel: str) -> None:
        """A channel's last subscribers vanished with a dead node; called on exactly one live node."""

    def local_snapshot(self) -> LocalSnapshot:
        """What this node holds now, to write back into cluster state after an outage."""

    def member_rejoined(self, member: LocalSubscription, removal_announced: bool) -> None:
        """Writing this node back after an outage made `member` (held here) the user's first connection on the
        channel again cluster-wide; called on exactly one node. `removal_announced`: a sweep had announced
        the user's removal (else a restarted Redis had forgotten the user, and nobody was told it left)."""

    def presence_channels(self) -> list[tuple[str, str]]:
        """(app_id, channel) of every presence channel with subscribers on this node."""

    def heal_members(
        self, app_id: str, channel: str, members: Mapping[str, Any], vanished: Collection[str]
    ) -> set[str]:
        """After an outage: bring this node's clients in line with `members`, the cluster's list. Members they
        do not know are announced now; users in `vanished` they know and the cluster still lacks are
        announced as removed. Returns the users they know and the cluster lacks now."""


class Broadcaster(Protocol):
    async def start(self, listener: ClusterListener) -> None: ...

    async def close(self) -> None: ...

    def publish(self, envelope: Envelope) -> None:
        """Send to every node, this one included. Never blocks; a local publish delivers at once."""

    def channel_occupied_locally(self, app_id: AppId, channel: str) -> None:
        """This node now has subscribers on `channel`: it must receive that channel's envelopes."""

    def channel_vacated_locally(self, app_id: AppId, channel: str) -> None:
        """This node has no subscribers on `channel` any more."""


class ClusterState(Protocol):
    async def add_connection(self, app_id: AppId, socket_id: SocketId) -> int:
        """Register an open connection; returns the app's connection count across the cluster."""

    async def remove_connection(self, app_id: AppId, socket_id: SocketId) -> None: ...

    async def add_subscription(self, app_id: AppId, channel: str, socket_id: SocketId) -> bool:
        """Returns True when this is the channel's first subscription anywhere (channel_occupied)."""

    async def remove_subscription(self, app_id: AppId, channel: str, socket_id: SocketId) -> bool:
        """Returns True when that was the channel's last subscription anywhere (channel_vacated)."""

    async def add_member(
        self, app_id: AppId, channel: str, socket_id: SocketId, user_id: UserId, user_info: Any
    ) -> bool:
        """Returns True when this is the user's first connection on the channel anywhere (member_added)."""

    async def remove_member(self, app_id: AppId, channel: str, socket_id: SocketId, user_id: UserId) -> bool:
        """Returns True when that was the user's last connection on the channel anywhere (member_removed)."""

    async def members(self, app_id: AppId, channel: str) -> dict[str, Any]:
        """user_id -> user_info of every member, cluster-wide, in join order."""

    async def member_count(self, app_id: AppId, channel: str) -> int: ...

    async def subscription_count(self, app_id: AppId, channel: str) -> int: ...

    async def channels(self, app_id: AppId, prefix: str = "") -> dict[str, int]:
        """Occupied channels starting with `prefix` -> subscription count, cluster-wide."""

    async def set_cache(self, app_id: AppId, channel: str, cached: CachedEvent) -> None: ...

    async def get_cache(self, app_id: AppId, channel: str) -> CachedEvent | None: ...


@dataclass(frozen=True, slots=True)
class KeptEvent:
    """One event of a channel's cluster-wide history."""

    event_id: str
    frame: bytes  # as published, without its id
    except_socket_id: str


@dataclass(frozen=True, slots=True)
class Position:
    """Where a connection stood on a channel: the newest event id it provably received ("0-0": none)."""

    event_id: str
    socket_id: str
    age_ms: int = 0  # how long ago it was recorded (a departure's age; 0 for a connection still here)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a subscribe to a recovering channel returns to, read atomically from the cluster-wide history.

    "fresh": nobody to recover (no departure of the user, no `fallback` given); "gap": the missed events
    are gone (`reason` "window" or "history"); "replay": `events` after `previous`, oldest first.
    `last_id` is the history's newest id when it was read ("0-0" for an empty or missing history)."""

    kind: Literal["fresh", "gap", "replay"]
    last_id: str
    reason: str = ""
    previous: Position | None = None
    events: tuple[KeptEvent, ...] = ()


@runtime_checkable
class HistoryStore(Protocol):
    """An adapter that keeps recovering channels' histories and departures for every node (Redis)."""

    @property
    def shares_histories(self) -> bool:
        """True when this adapter keeps them (fixed for its life); False: each node keeps its own."""

    @property
    def keeps_history(self) -> bool:
        """True while the store answers (Redis reachable); events published meanwhile carry ids."""

    def record_position(self, app_id: str, channel: str, user_id: str, position: Position, ttl_ms: int) -> None:
        """Where a connection still here stands (a subscribe of the user on another node may start from it).
        Never blocks, like the two below."""

    def forget_position(self, app_id: str, channel: str, user_id: str, socket_id: str) -> None:
        """The connection left the channel, and the user is still there (or chose to leave)."""

    def record_departure(self, app_id: str, channel: str, user_id: str, position: Position, ttl_ms: int) -> None:
        """The user's last connection on the channel here ended: remember for `ttl_ms` where it stood, unless
        the user is still on the channel on another node."""

    async def recover(
        self, app_id: str, channel: str, user_id: str, socket_id: str, window_ms: int, fallback: Position | None
    ) -> Recovered | None:
        """For a subscribe by `socket_id`: take the user's departure (or use `fallback`, a position known to this
        node, or the position of the user's connection still on another node) and read what it missed; None
        when the store cannot answer now."""


class Adapter(Broadcaster, ClusterState, Protocol):
    """Both seams from one backend (one Redis connection pool, one in-memory process)."""

    # True when no call ever suspends or uses asyncio.timeout(): the node and the lean transport then run
    # opens, subscribes, disconnects and publishes on the spot instead of in tasks (relay.eager).
    completes_synchronously: bool

"""Recovery: who counts as returning, from which event the replay starts, and what is never replayed."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from relay.adapters.base import Envelope, EnvelopeKind
from relay.config import AppConfig
from relay.protocol import messages
from relay.protocol.actions import Member, Send
from relay.protocol.ids import AppId, UserId
from relay.recovery import Recovery

APP = AppConfig(id=AppId("1"), key="k", secret="s", recovery=True, recovery_channels=("private-orders.",))
CHANNEL = "private-orders.5"


@dataclass
class Session:
    user_id: str | None


@dataclass
class Connection:
    """What a transport's connection offers recovery: an id, its app, its session and a send queue."""

    socket_id: str
    session: Session
    app: AppConfig = APP
    sent: list[bytes] = field(default_factory=list)

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def events(self) -> list[tuple[str, object]]:
        bodies = [orjson.loads(frame) for frame in self.sent]
        return [(body["event"], orjson.loads(body["data"]).get("n")) for body in bodies]


def publish(recovery: Recovery, n: int, channel: str = CHANNEL, except_socket_id: str = "") -> bytes:
    frame = messages.channel_event("order", channel, orjson.dumps({"n": n}).decode())
    return recovery.record(Envelope(EnvelopeKind.EVENT, APP.id, channel, frame, except_socket_id))


def test_a_returning_user_gets_everything_after_its_last_answered_ping() -> None:
    recovery = Recovery()
    old = Connection("1.1", Session("ann"))
    recovery.joined(old, CHANNEL, None)
    publish(recovery, 0)
    recovery.ticked(old, [Send(messages.PING)])
    publish(recovery, 1)  # written after the ping
    recovery.received(old, b'{"event":"pusher:pong","data":{}}')
    publish(recovery, 2)
    recovery.disconnected(old)
    recovery.left(old, CHANNEL)
    publish(recovery, 3)  # while away

    new = Connection("1.2", Session("ann"))
    recovery.joined(new, CHANNEL, None)
    assert new.events() == [("order", 1), ("order", 2), ("order", 3)]
    assert recovery.replayed == 3


def test_a_ping_not_answered_confirms_nothing() -> None:
    recovery = Recovery()
    old = Connection("1.1", Session("ann"))
    recovery.joined(old, CHANNEL, None)
    publish(recovery, 0)
    recovery.ticked(old, [Send(messages.PING)])
    recovery.disconnected(old)
    new = Connection("1.2", Session("ann"))
    recovery.joined(new, CHANNEL, None)
    assert new.events() == [("order", 0)]


def test_an_unsubscribe_is_no_departure() -> None:
    recovery = Recovery()
    old = Connection("1.1", Session("ann"))
    recovery.joined(old, CHANNEL, None)
    recovery.left(old, CHANNEL)
    publish(recovery, 0)
    again = Connection("1.1", Session("ann"))
    recovery.joined(again, CHANNEL, None)
    assert again.sent == []


def test_the_old_connections_own_client_events_are_not_replayed_to_it() -> None:
    recovery = Recovery()
    old = Connection("1.1", Session(None))
    recovery.joined(old, CHANNEL, Member(UserId("7"), None))  # presence-style identity
    publish(recovery, 0, except_socket_id="1.1")
    publish(recovery, 1, except_socket_id="9.9")
    recovery.disconnected(old)
    new = Connection("1.2", Session(None))
    recovery.joined(new, CHANNEL, Member(UserId("7"), None))
    assert new.events() == [("order", 1)]


def test_a_user_still_connected_elsewhere_counts_as_returning_from_there() -> None:
    """The dead connection relay has not noticed yet (or another tab): replay from its confirmed point."""
    recovery = Recovery()
    old = Connection("1.1", Session("ann"))
    recovery.joined(old, CHANNEL, None)
    publish(recovery, 0)
    new = Connection("1.2", Session("ann"))
    recovery.joined(new, CHANNEL, None)
    assert new.events() == [("order", 0)]
    recovery.disconnected(old)  # the user is still here on `new`: no departure is kept
    assert not recovery.returns.departures


def test_anonymous_connections_and_other_channels_are_not_recovered() -> None:
    recovery = Recovery()
    anonymous = Connection("1.1", Session(None))
    recovery.joined(anonymous, CHANNEL, None)
    recovery.disconnected(anonymous)
    publish(recovery, 0)
    recovery.joined(Connection("1.2", Session(None)), CHANNEL, None)
    assert not recovery.returns.departures and not recovery.returns.watches

    other = Connection("1.3", Session("ann"))
    recovery.joined(other, "private-chat", None)
    assert ("1", "private-chat") not in recovery.histories
    assert publish(recovery, 1, channel="private-chat") == messages.channel_event("order", "private-chat", '{"n":1}')


def test_member_events_are_never_recorded() -> None:
    recovery = Recovery()
    recovery.joined(Connection("1.1", Session("ann")), CHANNEL, None)
    frame = messages.member_added(CHANNEL, "bob", None)
    assert recovery.record(Envelope(EnvelopeKind.EVENT, APP.id, CHANNEL, frame)) == frame
    assert not recovery.histories[(APP.id, CHANNEL)].entries


def test_events_lost_beyond_the_history_are_told_with_relay_gap() -> None:
    recovery = Recovery()
    small = AppConfig(id=AppId("1"), key="k", secret="s", recovery=True, recovery_max_events=2)
    old = Connection("1.1", Session("ann"), small)
    recovery.joined(old, CHANNEL, None)
    recovery.disconnected(old)
    for n in range(5):
        publish(recovery, n)
    new = Connection("1.2", Session("ann"), small)
    recovery.joined(new, CHANNEL, None)
    assert [orjson.loads(frame)["event"] for frame in new.sent] == ["relay:gap"]
    assert orjson.loads(orjson.loads(new.sent[0])["data"]) == {"reason": "history"}

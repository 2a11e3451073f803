"""The session state machine (relay.protocol.session): frames and time in, actions out. No I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay import signing
from relay.protocol import errors, messages
from relay.protocol.actions import Action, Close, Join, Leave, Member, PublishClientEvent, Send, SignedIn
from relay.protocol.channels import ChannelKind
from relay.protocol.session import Session, SessionSettings

KEY, SECRET, SOCKET_ID = "app-key", "app-secret", "123.456"


def session(**settings: Any) -> Session:
    return Session(SOCKET_ID, SessionSettings(**settings), signing.AppVerifier(KEY, SECRET), now=0.0)


def frame(event: str, data: Any = None, channel: str | None = None) -> bytes:
    body: dict[str, Any] = {"event": event, "data": {} if data is None else data}
    if channel is not None:
        body["channel"] = channel
    return orjson.dumps(body)


def subscribe(channel: str, auth: str = "", channel_data: str | None = None) -> bytes:
    data: dict[str, Any] = {"auth": auth, "channel": channel}
    if channel_data is not None:
        data["channel_data"] = channel_data
    return frame("pusher:subscribe", data)


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [orjson.loads(action.frame) for action in actions if isinstance(action, Send)]


def only_error(actions: list[Action]) -> dict[str, Any]:
    assert len(actions) == 1 and isinstance(actions[0], Send), actions
    return dict(orjson.loads(actions[0].frame))


# Ping / pong and keep-alive ---------------------------------------------------------------------


def test_ping_answered_with_pong() -> None:
    assert session().receive(frame("pusher:ping"), 1.0) == [Send(messages.PONG)]


def test_pong_is_activity_only() -> None:
    assert session().receive(frame("pusher:pong"), 1.0) == []


def test_keepalive_ping_then_4201() -> None:
    s = session(activity_timeout=30, pong_timeout=10)
    assert s.tick(29.9) == []
    assert s.tick(30.0) == [Send(messages.PING)]
    assert s.tick(35.0) == []  # pinged once, waiting
    assert s.tick(39.9) == []
    assert s.tick(40.0) == [Close(errors.PONG_NOT_RECEIVED, "Pong reply not received")]
    assert s.closed
    assert s.tick(100.0) == []
    assert s.receive(frame("pusher:ping"), 100.0) == []


def test_any_inbound_frame_resets_keepalive() -> None:
    s = session(activity_timeout=30, pong_timeout=10)
    assert s.tick(30.0) == [Send(messages.PING)]
    s.receive(frame("pusher:pong"), 31.0)
    assert s.tick(45.0) == []  # not closed: the pong answered
    assert s.tick(61.0) == [Send(messages.PING)]
    s.receive(b"not even json", 62.0)  # malformed frames are activity too
    assert s.tick(80.0) == []


# Subscribe / unsubscribe ------------------------------------------------------------------------


def test_public_subscribe_and_unsubscribe() -> None:
    s = session()
    (join,) = s.receive(subscribe("news"), 1.0)
    assert isinstance(join, Join)
    assert (join.channel, join.channel_type.kind, join.member) == ("news", ChannelKind.PUBLIC, None)
    assert s.channels == {"news": None}
    assert s.receive(frame("pusher:unsubscribe", {"channel": "news"}), 2.0) == [Leave("news", None)]
    assert s.channels == {}
    assert s.receive(frame("pusher:unsubscribe", {"channel": "news"}), 3.0) == []


def test_resubscribe_joins_again_without_second_membership() -> None:
    s = session()
    s.receive(subscribe("news"), 1.0)
    (again,) = s.receive(subscribe("news"), 2.0)
    assert isinstance(again, Join)
    assert list(s.channels) == ["news"]


@pytest.mark.parametrize("channel", ["", "bad name", "x" * 201, "#server-to-user-1", "#other"])
def test_invalid_or_reserved_channel_refused(channel: str) -> None:
    s = session()
    error = only_error(s.receive(subscribe(channel), 1.0))
    assert error["event"] == "pusher:subscription_error"
    assert error["channel"] == channel
    assert error["data"]["status"] in (400, 401)
    assert s.channels == {}
    assert not s.closed


def test_private_channel_needs_valid_auth() -> None:
    s = session()
    good = signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-a")
    (join,) = s.receive(subscribe("private-a", good), 1.0)
    assert isinstance(join, Join) and join.channel_type.kind is ChannelKind.PRIVATE
    for bad in ("", signing.channel_auth(KEY, SECRET, "9.9", "private-b"), "junk"):
        error = only_error(s.receive(subscribe("private-b", bad), 2.0))
        assert error["event"] == "pusher:subscription_error"
        assert error["data"] == {"type": "AuthError", "error": error["data"]["error"], "status": 401}
    assert list(s.channels) == ["private-a"]


def test_encrypted_channel_authorised_like_private() -> None:
    s = session()
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-encrypted-a")
    (join,) = s.receive(subscribe("private-encrypted-a", auth), 1.0)
    assert isinstance(join, Join) and join.channel_type.kind is ChannelKind.ENCRYPTED


def test_presence_member_from_channel_data() -> None:
    s = session()
    data = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", data)
    (join,) = s.receive(subscribe("presence-a", auth, data), 1.0)
    assert isinstance(join, Join)
    assert join.member == Member("10", {"name": "Mr. Pusher"})  # numeric ids compared as strings
    assert s.channels == {"presence-a": "10"}
    assert s.receive(frame("pusher:unsubscribe", {"channel": "presence-a"}), 2.0) == [Leave("presence-a", "10")]


@pytest.mark.parametrize(
    ("channel_data", "status"),
    [
        (None, 401),  # not signed in: channel_data is required
        ("not json", 401),
        ("[1]", 401),
        ('{"user_info":{}}', 401),
        ('{"user_id":true}', 401),
        ('{"user_id":""}', 401),
        ('{"user_id":"' + "u" * 129 + '"}', errors.OVER_CAPACITY),
        ('{"user_id":"1","user_info":"' + "i" * 1100 + '"}', errors.OVER_CAPACITY),
    ],
)
def test_presence_channel_data_rules(channel_data: str | None, status: int) -> None:
    s = session()
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", channel_data)
    error = only_error(s.receive(subscribe("presence-a", auth, channel_data), 1.0))
    assert error["event"] == "pusher:subscription_error"
    assert error["data"]["status"] == status
    assert s.channels == {}


def test_presence_signature_covers_channel_data() -> None:
    s = session()
    signed = '{"user_id":"1"}'
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", signed)
    error = only_error(s.receive(subscribe("presence-a", auth, '{"user_id":"2"}'), 1.0))
    assert error["data"]["type"] == "AuthError"


# Client events ----------------------------------------------------------------------------------


def subscribed(channel: str, **settings: Any) -> Session:
    s = session(**settings)
    if channel.startswith("presence-"):
        data = '{"user_id":"7"}'
        s.receive(subscribe(channel, signing.channel_auth(KEY, SECRET, SOCKET_ID, channel, data), data), 0.0)
    else:
        s.receive(subscribe(channel, signing.channel_auth(KEY, SECRET, SOCKET_ID, channel)), 0.0)
    return s


def test_client_event_on_private_channel() -> None:
    s = subscribed("private-a")
    (publish,) = s.receive(frame("client-typing", {"t": 1}, "private-a"), 1.0)
    assert isinstance(publish, PublishClientEvent)
    assert publish.frame == b'{"event":"client-typing","channel":"private-a","data":{"t":1}}'
    assert publish.user_id is None


def test_client_event_on_presence_channel_carries_user_id() -> None:
    s = subscribed("presence-a")
    (publish,) = s.receive(frame("client-typing", {"t": 1}, "presence-a"), 1.0)
    assert isinstance(publish, PublishClientEvent)
    assert orjson.loads(publish.frame)["user_id"] == "7"


@pytest.mark.parametrize(
    ("channel", "settings", "code"),
    [
        ("private-a", {"enable_client_events": False}, errors.CLIENT_EVENT_REJECTED),
        ("news", {}, errors.CLIENT_EVENT_REJECTED),
        ("private-encrypted-a", {}, errors.CLIENT_EVENT_REJECTED),
    ],
    ids=["disabled", "public", "encrypted"],
)
def test_client_event_refused(channel: str, settings: dict[str, Any], code: int) -> None:
    s = subscribed(channel, **settings)
    error = only_error(s.receive(frame("client-x", {}, channel), 1.0))
    assert (error["event"], error["data"]["code"], error["channel"]) == ("pusher:error", code, channel)
    assert not s.closed


def test_client_event_needs_subscription() -> None:
    error = only_error(session().receive(frame("client-x", {}, "private-a"), 1.0))
    assert error["data"]["code"] == errors.CONNECTION_UNAUTHORIZED


def test_client_event_rate_limit() -> None:
    s = subscribed("private-a", client_event_rate=10)
    results = [s.receive(frame("client-x", {}, "private-a"), 1.0) for _ in range(11)]
    assert all(isinstance(r[0], PublishClientEvent) for r in results[:10])
    assert only_error(results[10])["data"]["code"] == errors.CLIENT_EVENT_REJECTED
    # Tokens refill at the configured rate.
    assert isinstance(s.receive(frame("client-x", {}, "private-a"), 1.2)[0], PublishClientEvent)


# Size, unknown events, sign-in ------------------------------------------------------------------


def test_oversize_message_refused_without_close() -> None:
    s = session(max_message_size=100)
    error = only_error(s.receive(subscribe("n" * 120), 1.0))
    assert error["data"]["code"] == errors.CLIENT_EVENT_REJECTED
    assert "100 bytes" in error["data"]["message"]
    assert s.channels == {} and not s.closed


def test_unknown_event_refused_without_close() -> None:
    s = session()
    error = only_error(s.receive(frame("pusher:teleport"), 1.0))
    assert error["data"]["code"] == errors.INVALID_MESSAGE_FORMAT
    assert not s.closed


def test_signin_and_own_server_to_user_channel() -> None:
    s = session()
    user_data = '{"id":"42","user_info":{"name":"Ann"}}'
    auth = signing.user_auth(KEY, SECRET, SOCKET_ID, user_data)
    actions = s.receive(frame("pusher:signin", {"auth": auth, "user_data": user_data}), 1.0)
    assert sent(actions)[0]["event"] == "pusher:signin_success"
    assert SignedIn("42", {"name": "Ann"}, ()) in actions
    (join,) = s.receive(subscribe("#server-to-user-42"), 2.0)
    assert isinstance(join, Join) and join.channel_type.kind is ChannelKind.SERVER_TO_USER
    error = only_error(s.receive(subscribe("#server-to-user-43"), 3.0))
    assert error["event"] == "pusher:subscription_error"


def test_bad_signin_is_an_error_frame_without_close() -> None:
    s = session()
    actions = s.receive(frame("pusher:signin", {"auth": "app-key:bad", "user_data": '{"id":"1"}'}), 1.0)
    assert [message["data"]["code"] for message in sent(actions)] == [errors.CONNECTION_UNAUTHORIZED]
    assert not any(isinstance(action, Close) for action in actions)
    assert not s.closed
    assert s.user is None


def test_required_signin_deadline_closes_4009() -> None:
    s = session(user_authentication_timeout=5.0)
    assert s.tick(4.9) == []
    actions = s.tick(5.0)
    assert isinstance(actions[-1], Close) and actions[-1].code == errors.CONNECTION_UNAUTHORIZED


def test_private_subscription_in_time_meets_the_signin_deadline() -> None:
    s = session(user_authentication_timeout=5.0)
    good = signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-a")
    assert isinstance(s.receive(subscribe("private-a", good), 1.0)[0], Join)
    assert s.tick(5.0) == []
    s.receive(frame("pusher:unsubscribe", {"channel": "private-a"}), 6.0)
    assert s.tick(7.0) == []  # the deadline was met once; leaving the channel later does not undo it
    assert not s.closed


def test_message_size_limit_counts_utf8_bytes() -> None:
    s = session(max_message_size=1000)
    # 480 two-byte characters: under 1000 characters, but with the envelope over 1000 bytes.
    raw = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "news", "pad": "\u00e9" * 480}}).decode()
    assert len(raw) < 1000 < len(raw.encode())
    error = only_error(s.receive(raw, 1.0))
    assert error["data"]["code"] == errors.CLIENT_EVENT_REJECTED
    ascii_raw = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "news", "pad": "e" * 900}}).decode()
    assert len(ascii_raw.encode()) <= 1000
    assert isinstance(s.receive(ascii_raw, 2.0)[0], Join)

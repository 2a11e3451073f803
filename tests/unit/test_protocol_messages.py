"""Inbound frame parsing and the exact bytes of outbound frames (docs/protocol.md §2)."""

from __future__ import annotations

import orjson
import pytest

from relay.protocol import errors, messages
from relay.protocol.errors import PusherError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"event":"pusher:ping","data":{}}', messages.Ping()),
        ('{"event":"pusher:ping"}', messages.Ping()),
        ('{"event":"pusher:pong","data":{}}', messages.Pong()),
        (
            '{"event":"pusher:subscribe","data":{"auth":"","channel":"news"}}',
            messages.Subscribe("news", "", None),
        ),
        ('{"event":"pusher:subscribe","data":{"channel":"news"}}', messages.Subscribe("news", "", None)),
        (
            '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"news\\",\\"auth\\":\\"k:s\\"}"}',
            messages.Subscribe("news", "k:s", None),
        ),
        (
            '{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\\"user_id\\":1}",'
            '"channel":"presence-a"}}',
            messages.Subscribe("presence-a", "k:s", '{"user_id":1}'),
        ),
        ('{"event":"pusher:unsubscribe","data":{"channel":"news"}}', messages.Unsubscribe("news")),
        (
            '{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\\"id\\":\\"1\\"}"}}',
            messages.Signin("k:s", '{"id":"1"}'),
        ),
        (
            '{"event":"client-typing","data":{"t":1},"channel":"private-a"}',
            messages.ClientEvent("client-typing", "private-a", {"t": 1}),
        ),
        (
            '{"event":"client-typing","data":"text","channel":"private-a"}',
            messages.ClientEvent("client-typing", "private-a", "text"),
        ),
        ('{"event":"pusher:nope","data":{}}', messages.UnknownEvent("pusher:nope")),
        ('{"event":"my-event"}', messages.UnknownEvent("my-event")),
    ],
)
def test_parse_message(raw: str, expected: messages.Message) -> None:
    assert messages.parse_message(raw) == expected
    assert messages.parse_message(raw.encode()) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "not json",
        "[]",
        '"a string"',
        "42",
        "{}",
        '{"event":null}',
        '{"event":7}',
        '{"event":"pusher:subscribe"}',
        '{"event":"pusher:subscribe","data":[]}',
        '{"event":"pusher:subscribe","data":"not json"}',
        '{"event":"pusher:subscribe","data":{}}',
        '{"event":"pusher:subscribe","data":{"channel":5}}',
        '{"event":"pusher:subscribe","data":{"channel":"a","auth":5}}',
        '{"event":"pusher:subscribe","data":{"channel":"a","channel_data":{"user_id":1}}}',
        '{"event":"pusher:unsubscribe","data":{}}',
        '{"event":"pusher:signin","data":{"auth":1}}',
        '{"event":"client-x","data":{}}',
        '{"event":"client-x","data":{},"channel":["private-a"]}',
        b"\xff\xfe",
    ],
)
def test_malformed_frames_raise_4200_without_close(raw: str | bytes) -> None:
    with pytest.raises(PusherError) as caught:
        messages.parse_message(raw)
    assert caught.value.code == errors.INVALID_MESSAGE_FORMAT
    assert caught.value.close is False
    assert caught.value.message.startswith("Invalid message format")


def test_outbound_frames_exact_bytes() -> None:
    assert messages.PONG == b'{"event":"pusher:pong","data":"{}"}'
    assert messages.PING == b'{"event":"pusher:ping","data":"{}"}'
    assert (
        messages.connection_established("1234.1234", 120) == b'{"event":"pusher:connection_established",'
        b'"data":"{\\"socket_id\\":\\"1234.1234\\",\\"activity_timeout\\":120}"}'
    )
    assert (
        messages.subscription_succeeded("news")
        == b'{"event":"pusher_internal:subscription_succeeded","channel":"news","data":"{}"}'
    )
    assert messages.channel_event("my-event", "my-channel", '{"hello":"world"}') == (
        b'{"event":"my-event","channel":"my-channel","data":"{\\"hello\\":\\"world\\"}"}'
    )
    assert messages.channel_event("e", "c", "a plain string") == b'{"event":"e","channel":"c","data":"a plain string"}'
    assert messages.cache_miss("cache-news") == b'{"event":"pusher:cache_miss","channel":"cache-news"}'


def test_presence_frames() -> None:
    frame = orjson.loads(messages.presence_subscription_succeeded("presence-chat", {"1": {"name": "Ann"}, "2": None}))
    assert frame["event"] == "pusher_internal:subscription_succeeded"
    assert frame["channel"] == "presence-chat"
    assert orjson.loads(frame["data"]) == {
        "presence": {"ids": ["1", "2"], "hash": {"1": {"name": "Ann"}, "2": None}, "count": 2}
    }
    added = orjson.loads(messages.member_added("presence-chat", "2", {"name": "Bob"}))
    assert orjson.loads(added["data"]) == {"user_id": "2", "user_info": {"name": "Bob"}}
    removed = orjson.loads(messages.member_removed("presence-chat", "2"))
    assert (removed["event"], orjson.loads(removed["data"])) == ("pusher_internal:member_removed", {"user_id": "2"})


def test_client_event_frames() -> None:
    assert messages.client_event("client-t", "private-x", {"typing": True}, None) == (
        b'{"event":"client-t","channel":"private-x","data":{"typing":true}}'
    )
    assert messages.client_event("client-t", "presence-r", {"typing": True}, "2") == (
        b'{"event":"client-t","channel":"presence-r","data":{"typing":true},"user_id":"2"}'
    )


def test_error_frames() -> None:
    assert errors.encode_error(4001, "Application does not exist") == (
        b'{"event":"pusher:error","data":{"code":4001,"message":"Application does not exist"}}'
    )
    assert orjson.loads(errors.encode_error(None, "m", "private-a")) == {
        "event": "pusher:error",
        "data": {"code": None, "message": "m"},
        "channel": "private-a",
    }
    frame = orjson.loads(messages.subscription_error("private-x", "AuthError", "bad", 401))
    assert frame == {
        "event": "pusher:subscription_error",
        "channel": "private-x",
        "data": {"type": "AuthError", "error": "bad", "status": 401},
    }


def test_signin_success_and_watchlist() -> None:
    frame = orjson.loads(messages.signin_success('{"id":"1"}'))
    assert frame["event"] == "pusher:signin_success"
    assert orjson.loads(frame["data"]) == {"user_data": '{"id":"1"}'}
    frame = orjson.loads(messages.watchlist_events([{"name": "online", "user_ids": ["2"]}]))
    assert "channel" not in frame
    assert orjson.loads(frame["data"]) == {"events": [{"name": "online", "user_ids": ["2"]}]}

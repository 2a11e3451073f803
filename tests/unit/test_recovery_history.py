"""ChannelHistory: event ids in data, bounds by count, bytes and age, and gaps."""

from __future__ import annotations

import orjson

from relay.protocol import messages
from relay.recovery.history import ID_KEY, ChannelHistory, with_event_id


def event(n: int, data: str | None = None) -> bytes:
    return messages.channel_event(
        "tick", "presence-room", data if data is not None else orjson.dumps({"n": n}).decode()
    )


def data_of(frame: bytes) -> object:
    return orjson.loads(orjson.loads(frame)["data"])


def test_the_id_is_spliced_first_into_a_data_object_keeping_the_publishers_bytes() -> None:
    frame = with_event_id(event(0, '{ "n" : 1,"s":"x"}'), "ab-7")
    assert orjson.loads(frame)["data"] == '{"relay_id":"ab-7", "n" : 1,"s":"x"}'
    assert with_event_id(event(0, "{}"), "ab-1") == event(0, '{"relay_id":"ab-1"}')
    assert with_event_id(event(0, "{ }"), "ab-1") == event(0, '{"relay_id":"ab-1" }')
    # Leading whitespace: decoded, checked to be an object, and spliced after the brace.
    assert with_event_id(event(0, ' {"a":"}\\"}"}'), "ab-3") == event(0, '{"relay_id":"ab-3","a":"}\\"}"}')


def test_every_spliced_frame_is_valid_json_with_the_data_intact() -> None:
    for data in ({"a": 1}, {}, {"q": 'say "hi" {}'}, {"nested": {"x": [1, {"y": "}"}]}}):
        text = orjson.dumps(data).decode()
        spliced = orjson.loads(orjson.loads(with_event_id(event(0, text), "e-1"))["data"])
        assert spliced == {ID_KEY: "e-1", **data}


def test_data_that_is_no_object_is_left_alone() -> None:
    for data in ("hello", "[1,2]", "{broken", "12"):
        assert with_event_id(event(0, data), "ab-1") == event(0, data)


def test_client_event_objects_get_the_id_too() -> None:
    frame = messages.client_event("client-typing", "presence-room", {"who": "ann"}, "1")
    body = orjson.loads(with_event_id(frame, "ab-2"))
    assert body["data"] == {ID_KEY: "ab-2", "who": "ann"}
    assert body["user_id"] == "1"


def test_sequence_and_since() -> None:
    history = ChannelHistory(max_events=10, max_bytes=1_000_000, max_age=60)
    frames = [history.append(event(n), "", now=0.0) for n in range(5)]
    assert [data_of(frame)[ID_KEY] for frame in frames] == [f"{history.epoch}-{n}" for n in range(1, 6)]  # type: ignore[index]
    missed = history.since(2, now=1.0)
    assert missed is not None and [entry.seq for entry in missed] == [3, 4, 5]
    assert history.since(5, now=1.0) == []


def test_count_bound_evicts_oldest_and_an_evicted_position_is_a_gap() -> None:
    history = ChannelHistory(max_events=3, max_bytes=1_000_000, max_age=60)
    for n in range(10):
        history.append(event(n), "", now=0.0)
    assert [entry.seq for entry in history.entries] == [8, 9, 10]
    assert history.since(6, now=0.0) is None
    missed = history.since(7, now=0.0)
    assert missed is not None and [entry.seq for entry in missed] == [8, 9, 10]


def test_byte_bound() -> None:
    history = ChannelHistory(max_events=1000, max_bytes=500, max_age=60)
    for n in range(100):
        history.append(event(n), "", now=0.0)
        assert history.bytes <= 500
    assert history.bytes == sum(len(entry.frame) for entry in history.entries)
    assert len(history.entries) > 1


def test_age_bound() -> None:
    history = ChannelHistory(max_events=1000, max_bytes=1_000_000, max_age=10)
    history.append(event(0), "", now=0.0)
    history.append(event(1), "", now=5.0)
    history.trim(now=12.0)
    assert [entry.seq for entry in history.entries] == [2]
    assert history.since(0, now=12.0) is None
    history.trim(now=100.0)
    assert not history.entries and history.bytes == 0
    assert history.since(2, now=100.0) == []

"""Channel kinds and name rules, event name rules, socket ids (docs/protocol.md §1.2, §4)."""

from __future__ import annotations

import pytest

from relay.protocol.channels import (
    ChannelKind,
    channel_name_problem,
    channel_type,
    event_name_problem,
    is_cache,
    is_presence,
    server_to_user_channel,
)
from relay.protocol.ids import is_socket_id, new_socket_id


@pytest.mark.parametrize(
    ("channel", "kind", "cache"),
    [
        ("news", ChannelKind.PUBLIC, False),
        ("cache-news", ChannelKind.PUBLIC, True),
        ("private-a", ChannelKind.PRIVATE, False),
        ("private-cache-a", ChannelKind.PRIVATE, True),
        ("private-encrypted-a", ChannelKind.ENCRYPTED, False),
        ("private-encrypted-cache-a", ChannelKind.ENCRYPTED, True),
        ("presence-a", ChannelKind.PRESENCE, False),
        ("presence-cache-a", ChannelKind.PRESENCE, True),
        ("#server-to-user-7", ChannelKind.SERVER_TO_USER, False),
        # Prefixes count only at position 0 and with their dash (unlike soketi and Reverb).
        ("my-private-x", ChannelKind.PUBLIC, False),
        ("privatefoo", ChannelKind.PUBLIC, False),
        ("presencefoo", ChannelKind.PUBLIC, False),
        ("a-cache-b", ChannelKind.PUBLIC, False),
    ],
)
def test_channel_type_by_exact_prefix(channel: str, kind: ChannelKind, cache: bool) -> None:
    assert channel_type(channel).kind is kind
    assert channel_type(channel).is_cache is cache
    assert is_cache(channel) is cache
    assert is_presence(channel) is (kind is ChannelKind.PRESENCE)


def test_auth_and_client_event_rules_by_kind() -> None:
    needs_auth = {kind for kind in ChannelKind if channel_type(_example(kind)).needs_auth}
    assert needs_auth == {ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE}
    client_events = {kind for kind in ChannelKind if channel_type(_example(kind)).allows_client_events}
    assert client_events == {ChannelKind.PRIVATE, ChannelKind.PRESENCE}


def _example(kind: ChannelKind) -> str:
    return {
        ChannelKind.PUBLIC: "news",
        ChannelKind.PRIVATE: "private-a",
        ChannelKind.ENCRYPTED: "private-encrypted-a",
        ChannelKind.PRESENCE: "presence-a",
        ChannelKind.SERVER_TO_USER: "#server-to-user-1",
    }[kind]


@pytest.mark.parametrize(
    "channel",
    ["a", "news", "A-Z_a-z0-9=@,.;", "private-orders.1", "x" * 200, "#server-to-user-42", "presence-chat.1"],
)
def test_valid_channel_names(channel: str) -> None:
    assert channel_name_problem(channel) == ""


@pytest.mark.parametrize(
    ("channel", "why"),
    [
        ("", "empty"),
        ("x" * 201, "longer than 200"),
        ("has space", "may only contain"),
        ("caf\u00e9", "may only contain"),
        ("a/b", "may only contain"),
        ("a:b", "may only contain"),
        ("a*", "may only contain"),
        ("news\n", "may only contain"),
        ("#news", "reserved"),
        ("#server-to-user-", "reserved"),
        ("a#b", "may only contain"),
        ("##server-to-user-1", "may only contain"),
    ],
)
def test_invalid_channel_names(channel: str, why: str) -> None:
    assert why in channel_name_problem(channel)


def test_server_to_user_channel() -> None:
    assert server_to_user_channel("42") == "#server-to-user-42"


VALID_EVENTS = ["e", "my-event", "App\\Events\\OrderShipped", ".order.shipped", "e" * 200, "client-x"]


@pytest.mark.parametrize("event", VALID_EVENTS)
def test_valid_event_names(event: str) -> None:
    assert event_name_problem(event) == ""


@pytest.mark.parametrize(
    ("event", "why"),
    [("", "empty"), ("e" * 201, "longer than 200"), ("pusher:x", "reserved"), ("pusher_internal:x", "reserved")],
)
def test_invalid_event_names(event: str, why: str) -> None:
    assert why in event_name_problem(event)


def test_socket_ids() -> None:
    ids = {new_socket_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_socket_id(socket_id) for socket_id in ids)
    for bad in ("", "1", "1.", ".1", "1.2.3", "a.b", " 1.2", "1.2\n", "-1.2", "1,2", "\u0661.\u0662"):
        assert not is_socket_id(bad), bad
    assert is_socket_id("123.456")

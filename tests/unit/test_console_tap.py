"""The console's pure parts: the tap (off until a sink attaches), what it keeps of frames and payloads,
the bounded page queues that drop and count, and who the token check lets in."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from relay.admission import parse_networks
from relay.config import ConfigError, load_config
from relay.console.auth import COOKIE, ConsoleAuth, cookie_value
from relay.console.pages import ConsolePages, LivePage
from relay.console.tap import MAX_DATA, ConsoleEvent, ConsoleTap, Kind
from relay.protocol import errors, messages

TOKEN = "console-unit-token-0123456789"


class Collect:
    def __init__(self) -> None:
        self.events: list[ConsoleEvent] = []

    def put(self, event: ConsoleEvent) -> None:
        self.events.append(event)


def tapped() -> tuple[ConsoleTap, Collect]:
    tap = ConsoleTap(node="n1")
    sink = Collect()
    tap.attach(sink)
    return tap, sink


def test_tap_is_active_exactly_while_a_sink_is_attached() -> None:
    tap = ConsoleTap()
    sink = Collect()
    assert not tap.active
    tap.attach(sink)
    tap.attach(sink)
    assert tap.active
    tap.detach(sink)
    assert not tap.active


def test_only_error_frames_sent_to_a_client_become_log_lines() -> None:
    tap, sink = tapped()
    tap.sent("1", "1.2", messages.subscription_succeeded("news"))
    tap.sent("1", "1.2", messages.connection_established("1.2", 120))
    tap.sent("1", "1.2", errors.encode_error(errors.CONNECTION_UNAUTHORIZED, "You got disconnected"))
    tap.sent("1", "1.2", messages.subscription_error("private-x", "AuthError", "Invalid signature", 401))
    assert [(event.kind, event.channel, event.detail) for event in sink.events] == [
        (Kind.ERROR, "", "code 4009, message You got disconnected"),
        (Kind.SUBSCRIPTION_ERROR, "private-x", "status 401, type AuthError, error Invalid signature"),
    ]


def test_payloads_are_truncated_and_say_their_length() -> None:
    tap, sink = tapped()
    tap.api_event("1", "news", "big", "x" * 5000, "")
    tap.client_event("1", "1.2", "private-chat", "client-typing", {"who": "ann"})
    big, client = sink.events
    assert big.data == "x" * MAX_DATA + "… (5000 characters)"
    assert client.data == '{"who":"ann"}'
    assert (client.kind, client.node) == (Kind.CLIENT_EVENT, "n1")


def test_a_webhook_line_names_the_host_and_events_never_the_url() -> None:
    tap, sink = tapped()
    events = [{"name": "channel_occupied", "channel": "news"}, {"name": "member_added", "channel": "presence-a"}]
    tap.webhook("1", "hooks.example.com", events, None)
    tap.webhook("1", "hooks.example.com", events[:1], "HTTP 500")
    sent, failed = sink.events
    assert sent.detail == "to hooks.example.com: channel_occupied news, member_added presence-a"
    assert (failed.kind, failed.detail) == (
        Kind.WEBHOOK_FAILED,
        "to hooks.example.com: channel_occupied news: HTTP 500",
    )


def test_an_event_from_another_node_is_checked_and_truncated() -> None:
    tap, sink = tapped()
    tap.api_event("1", "news", "e", "d", "")
    wire = orjson.loads(orjson.dumps(sink.events[0].as_json()))
    assert ConsoleEvent.from_json(wire, "n2") == ConsoleEvent(
        Kind.API_EVENT, "1", wire["time"], "news", "e", data="d", node="n2"
    )
    assert ConsoleEvent.from_json({**wire, "kind": "nonsense"}, "n2") is None
    assert ConsoleEvent.from_json({**wire, "channel": 7}, "n2") is None
    assert ConsoleEvent.from_json([1, 2], "n2") is None
    long = ConsoleEvent.from_json({**wire, "data": "y" * 9000}, "n2")
    assert long is not None and len(long.data) < 600


async def test_a_page_that_cannot_keep_up_drops_and_counts() -> None:
    page = LivePage("1", limit=3)
    for index in range(5):
        page.put(ConsoleEvent(Kind.API_EVENT, "1", 0.0, channel=f"c{index}"))
    page.put(ConsoleEvent(Kind.API_EVENT, "other-app", 0.0))
    assert page.dropped == 2
    await asyncio.wait_for(page.wait(10.0), 1.0)  # already has lines: returns at once
    assert [event.channel for event in page.take()] == ["c0", "c1", "c2"]
    assert not page.pending


def test_pages_turn_the_tap_on_and_off() -> None:
    tap = ConsoleTap()
    pages = ConsolePages(tap)
    first, second = pages.open("1"), pages.open("2")
    tap.api_event("1", "news", "e", "d", "")
    assert tap.active and first.pending and not second.pending
    pages.close(first)
    assert tap.active
    pages.close(second)
    assert not tap.active


def _request(peer: str, headers: dict[str, str] | None = None, secure: bool = False) -> web.Request:
    transport: Any = _Transport(peer)
    request = make_mocked_request("GET", "/console", headers=headers or {}, transport=transport)
    return request.clone(scheme="https") if secure else request


class _Transport:
    def __init__(self, peer: str) -> None:
        self._peer = (peer, 50000)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._peer if name == "peername" else default


def test_token_by_bearer_header_or_login_cookie_never_anything_else() -> None:
    auth = ConsoleAuth(TOKEN, allow_insecure=False)
    assert auth.is_authorized(_request("127.0.0.1", {"Authorization": f"Bearer {TOKEN}"}))
    assert not auth.is_authorized(_request("127.0.0.1", {"Authorization": "Bearer nope"}))
    assert auth.is_authorized(_request("127.0.0.1", {"Cookie": f"{COOKIE}={cookie_value(TOKEN)}"}))
    # The cookie holds an HMAC of the token, so the token itself is no cookie.
    assert not auth.is_authorized(_request("127.0.0.1", {"Cookie": f"{COOKIE}={TOKEN}"}))
    assert not auth.is_authorized(_request("127.0.0.1"))


def test_plain_http_from_another_machine_is_refused_unless_allowed() -> None:
    strict, relaxed = ConsoleAuth(TOKEN, allow_insecure=False), ConsoleAuth(TOKEN, allow_insecure=True)
    assert "console_allow_insecure" in strict.insecure_problem(_request("192.0.2.7"))
    assert strict.insecure_problem(_request("192.0.2.7", secure=True)) == ""
    assert strict.insecure_problem(_request("127.0.0.1")) == ""
    assert strict.insecure_problem(_request("::1")) == ""
    assert relaxed.insecure_problem(_request("192.0.2.7")) == ""


def test_through_a_trusted_proxy_the_browsers_own_link_counts() -> None:
    auth = ConsoleAuth(TOKEN, allow_insecure=False, trusted_proxies=parse_networks(["127.0.0.1"]))
    plain = {"X-Forwarded-For": "192.0.2.7", "X-Forwarded-Proto": "http"}
    tls = {"X-Forwarded-For": "192.0.2.7", "X-Forwarded-Proto": "https"}
    # A proxy on this machine serving plain HTTP to the world: the token would still cross in clear.
    assert "from 192.0.2.7" in auth.insecure_problem(_request("127.0.0.1", plain))
    assert auth.insecure_problem(_request("127.0.0.1", tls)) == ""
    # Forwarded headers from a peer that is no trusted proxy are not believed.
    assert "from 192.0.2.9" in auth.insecure_problem(_request("192.0.2.9", tls))


def test_a_short_console_token_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="console_token: must be at least 16 characters"):
        load_config(env={"RELAY_CONSOLE_TOKEN": "short"})
    assert load_config(env={"RELAY_CONSOLE_TOKEN": TOKEN}).console_token == TOKEN


def test_lines_over_the_budget_are_dropped_before_they_are_built_and_counted() -> None:
    tap = ConsoleTap(budget=2)
    sink = Collect()
    tap.attach(sink)
    for index in range(5):
        tap.api_event("1", f"c{index}", "e", "d", "")
    tap.sent("1", "1.2", messages.subscription_succeeded("news"))  # no line: not counted either
    assert [event.channel for event in sink.events] == ["c0", "c1"]
    assert tap.dropped == 3

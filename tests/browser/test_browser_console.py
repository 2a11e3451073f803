"""The debug console (`{path}/console`) in headless Chromium: it logs in with the token, watches a pusher-js
client connect, subscribe and get refused, sees an SDK trigger, filters by channel and event, sends a test
event the client receives; without the token it gets 401 and nothing; in a two-node cluster it shows a
client of the other node."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import aiohttp
from playwright.async_api import Browser, Locator, Page, expect

from tests.browser.harness import (
    ManagedProcess,
    RelayProcess,
    screenshot,
    start_redis,
    start_relay,
)
from tests.clients.harness import Clients, app_config, python_trigger, subscribe
from tests.support.fixtures import NodeFactory

CONSOLE_TOKEN: Final = "console-test-token-0123456789"
ANN: Final[dict[str, Any]] = {"user_id": "ann", "user_info": {"name": "Ann"}}


def console_relay(processes: list[ManagedProcess], workdir: Path, **settings: object) -> RelayProcess:
    relay = start_relay({**app_config(), "console_token": CONSOLE_TOKEN, **settings}, workdir=workdir)
    processes.append(relay)
    return relay


async def console_page(browser: Browser, relay: RelayProcess, errors: list[str]) -> Page:
    """A page logged in through the form, with the keyboard, showing app 1001 live."""
    page = await (await browser.new_context(viewport={"width": 1366, "height": 800})).new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    response = await page.goto(f"{relay.http_url}/console")
    assert response is not None and response.status == 401
    errors.clear()  # the browser reports the 401 of the login page itself as a console error
    await page.get_by_label("Console token").fill(CONSOLE_TOKEN)
    await page.get_by_label("Console token").press("Enter")
    await expect(page.locator("#live")).to_have_text("live: app 1001")
    return page


def log_row(page: Page, kind: str, text: str) -> Locator:
    return page.locator(f"#log tbody tr.kind-{kind}").filter(has_text=text)


async def test_console_shows_pusher_js_traffic_filters_it_and_sends_a_test_event(
    browser: Browser,
    processes: list[ManagedProcess],
    node_factory: NodeFactory,
    tmp_path: Path,
) -> None:
    relay = console_relay(processes, tmp_path)
    errors: list[str] = []
    page = await console_page(browser, relay, errors)

    client = await Clients(node_factory).pusher_js(relay.port, bad_auth_channels=["private-locked"], user=ANN)
    socket_id = (await client.expect(type="connected"))["socket_id"]
    await subscribe(client, "news")
    await subscribe(client, "presence-room")
    await client.send({"op": "subscribe", "channel": "private-locked"})
    await client.expect(type="subscription_error", channel="private-locked")

    await expect(log_row(page, "connected", socket_id)).to_have_count(1)
    await expect(log_row(page, "subscribed", "news")).to_have_count(1)
    # Why an event would not arrive: the refused subscription is there, with its reason.
    await expect(log_row(page, "subscription_error", "private-locked")).to_contain_text("AuthError")
    channels = page.locator("#channels tbody tr")
    await expect(channels.filter(has_text="news")).to_contain_text("1")
    await expect(channels.filter(has_text="presence-room")).to_contain_text("1 member: ann")
    await expect(page.locator("#fig-connections")).to_have_text("1")

    await python_trigger(relay.port, "news", "news-published", {"title": "Hello"})
    await python_trigger(relay.port, "weather", "forecast", {"sky": "clear"})
    await expect(log_row(page, "api_event", "news-published")).to_contain_text('{"title": "Hello"}')
    await expect(log_row(page, "api_event", "forecast")).to_have_count(1)
    print("screenshot:", await screenshot(page, "console-traffic"))

    await page.get_by_label("Filter log by channel").fill("news")
    await expect(log_row(page, "api_event", "forecast")).to_have_count(0)
    await expect(log_row(page, "api_event", "news-published")).to_have_count(1)
    await page.get_by_label("Filter log by event").fill("published")
    await expect(page.locator("#log tbody tr")).to_have_count(1)
    print("screenshot:", await screenshot(page, "console-filtered"))

    await page.locator("#send-channel").fill("news")
    await page.locator("#send-event").fill("console-test")
    await page.locator("#send-data").fill('{"from":"the console"}')
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#send-result")).to_have_text("sent to news")
    received = await client.expect(type="event", channel="news", event="console-test")
    assert received["data"] == {"from": "the console"}
    await page.get_by_label("Filter log by event").fill("")
    await expect(log_row(page, "api_event", "console-test")).to_have_count(1)

    await page.get_by_label("Filter log by channel").fill("")
    await client.send({"op": "disconnect"})
    await expect(log_row(page, "disconnected", socket_id)).to_contain_text("close code")
    print("screenshot:", await screenshot(page, "console-test-event-and-close"))
    assert errors == []


async def test_without_the_token_the_console_gives_401_and_nothing(
    browser: Browser, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    relay = console_relay(processes, tmp_path)
    page = await browser.new_page()
    response = await page.goto(f"{relay.http_url}/console")
    assert response is not None and response.status == 401
    await expect(page.get_by_label("Console token")).to_be_visible()
    assert await page.locator("#log").count() == 0

    await page.get_by_label("Console token").fill("not-the-console-token")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("That is not the console token.")
    print("screenshot:", await screenshot(page, "console-refused"))

    base = f"{relay.http_url}/console"
    async with aiohttp.ClientSession() as session:
        for method, path in (
            ("GET", "/stream?app_id=1001"),
            ("GET", "/apps"),
            ("GET", "/static/console.js"),
            ("POST", "/events"),
        ):
            async with session.request(method, base + path, headers={"Authorization": "Bearer wrong"}) as answer:
                assert answer.status == 401, path
                assert set(await answer.json()) == {"error"}, path
        async with session.get(base, cookies={"relay_console": "forged"}) as answer:
            assert answer.status == 401
            assert "relay console: log in" in await answer.text()


async def test_console_is_off_without_a_token(processes: list[ManagedProcess], tmp_path: Path) -> None:
    relay = start_relay(app_config(), workdir=tmp_path)
    processes.append(relay)
    async with aiohttp.ClientSession() as session, session.get(f"{relay.http_url}/console") as answer:
        assert answer.status == 404


async def test_console_of_one_node_shows_a_client_of_the_other_node(
    browser: Browser,
    processes: list[ManagedProcess],
    node_factory: NodeFactory,
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis")
    processes.append(redis)
    node_a = console_relay(processes, tmp_path / "a", redis_url=redis.url)
    node_b = console_relay(processes, tmp_path / "b", redis_url=redis.url)
    errors: list[str] = []
    page = await console_page(browser, node_a, errors)

    client = await Clients(node_factory).pusher_js(node_b.port, user=ANN)
    socket_id = (await client.expect(type="connected"))["socket_id"]
    await subscribe(client, "presence-lobby")

    # Cluster state: the channel and its member, though node A holds no connection.
    await expect(page.locator("#channels tbody tr").filter(has_text="presence-lobby")).to_contain_text("ann")
    # The live log relayed from node B, whose name carries its port.
    await expect(log_row(page, "subscribed", "presence-lobby")).to_contain_text(f":{node_b.port}:")
    await expect(page.locator("#fig-connections")).to_have_text("1")
    await expect(page.locator("#fig-nodes")).to_have_text("2")

    await python_trigger(node_a.port, "presence-lobby", "hello", {"n": 1})
    await client.expect(type="event", channel="presence-lobby", event="hello")
    await expect(log_row(page, "api_event", "hello")).to_have_count(1)
    await client.send({"op": "disconnect"})
    await expect(log_row(page, "disconnected", socket_id)).to_have_count(1)
    print("screenshot:", await screenshot(page, "console-cluster"))
    assert errors == []

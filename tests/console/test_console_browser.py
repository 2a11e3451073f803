"""The debug console in a real browser: headless Chromium logs in, watches pusher-js traffic, filters and
sends a test event; a two-node cluster shows a client of the other node. Screenshots are kept as artefacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from tests.clients.harness import Clients, app_config, python_trigger, subscribe
from tests.console.conftest import CONSOLE_TOKEN
from tests.support import RelayProcess, scaled
from tests.support.fixtures import RelayFactory
from tests.support.redis import RedisProcess
from tests.support.timeouts import TIMEOUT

pytestmark = pytest.mark.timeout(scaled(120))

WAIT_MS = TIMEOUT * 1000
ANN: dict[str, Any] = {"user_id": "ann", "user_info": {"name": "Ann"}}


def console_config(**extra: object) -> dict[str, object]:
    return {**app_config(), "console_token": CONSOLE_TOKEN, **extra}


def log_row(page: Page, kind: str, text: str) -> Any:
    return page.locator(f"#log tbody tr.kind-{kind}").filter(has_text=text)


async def log_in(page: Page, relay: RelayProcess) -> None:
    response = await page.goto(f"{relay.http_url}/console")
    assert response is not None and response.status == 401
    await page.get_by_label("Console token").fill(CONSOLE_TOKEN)
    await page.get_by_label("Console token").press("Enter")  # the keyboard is enough
    await expect(page.locator("#live")).to_have_text("live: app 1001", timeout=WAIT_MS)


async def test_console_shows_pusher_js_traffic_filters_it_and_sends_a_test_event(
    relay_factory: RelayFactory, clients: Clients, browser: Browser, artifacts: Path
) -> None:
    relay = relay_factory(console_config())
    page = await browser.new_page(viewport={"width": 1366, "height": 800})
    await log_in(page, relay)

    client = await clients.pusher_js(relay.port, bad_auth_channels=["private-locked"], user=ANN)
    connected = await client.expect(type="connected")
    socket_id = connected["socket_id"]
    await subscribe(client, "news")
    await subscribe(client, "presence-room")
    await client.send({"op": "subscribe", "channel": "private-locked"})
    await client.expect(type="subscription_error", channel="private-locked")

    await expect(log_row(page, "connected", socket_id)).to_have_count(1, timeout=WAIT_MS)
    await expect(log_row(page, "subscribed", "news")).to_have_count(1, timeout=WAIT_MS)
    # Why an event would not arrive: the refused subscription is there, with its reason.
    await expect(log_row(page, "subscription_error", "private-locked")).to_contain_text("AuthError", timeout=WAIT_MS)
    channels = page.locator("#channels tbody")
    await expect(channels.locator("tr").filter(has_text="news")).to_contain_text("1", timeout=WAIT_MS)
    await expect(channels.locator("tr").filter(has_text="presence-room")).to_contain_text("ann", timeout=WAIT_MS)
    await expect(page.locator("#fig-connections")).to_have_text("1", timeout=WAIT_MS)

    await python_trigger(relay.port, "news", "news-published", {"title": "Hello"})
    await python_trigger(relay.port, "weather", "forecast", {"sky": "clear"})
    await expect(log_row(page, "api_event", "news-published")).to_contain_text('"title": "Hello"', timeout=WAIT_MS)
    await expect(log_row(page, "api_event", "forecast")).to_have_count(1, timeout=WAIT_MS)
    await page.screenshot(path=artifacts / "1-traffic.png", full_page=True)

    await page.get_by_label("Filter log by channel").fill("news")
    await expect(log_row(page, "api_event", "forecast")).to_have_count(0, timeout=WAIT_MS)
    await expect(log_row(page, "api_event", "news-published")).to_have_count(1)
    await page.get_by_label("Filter log by event").fill("published")
    await expect(page.locator("#log tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await page.screenshot(path=artifacts / "2-filtered.png", full_page=True)

    await page.locator("#send-channel").fill("news")
    await page.locator("#send-event").fill("console-test")
    await page.locator("#send-data").fill('{"from":"the console"}')
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#send-result")).to_have_text("sent to news", timeout=WAIT_MS)
    received = await client.expect(type="event", channel="news", event="console-test")
    assert received["data"] == {"from": "the console"}
    await page.get_by_label("Filter log by event").fill("")
    await expect(log_row(page, "api_event", "console-test")).to_have_count(1, timeout=WAIT_MS)

    await page.get_by_label("Filter log by channel").fill("")
    await client.send({"op": "disconnect"})
    await expect(log_row(page, "disconnected", socket_id)).to_contain_text("close code", timeout=WAIT_MS)
    await page.screenshot(path=artifacts / "3-test-event-and-close.png", full_page=True)


async def test_without_the_token_the_console_gives_401_and_nothing(
    relay_factory: RelayFactory, browser: Browser, artifacts: Path
) -> None:
    relay = relay_factory(console_config())
    page = await browser.new_page()
    response = await page.goto(f"{relay.http_url}/console")
    assert response is not None and response.status == 401
    await expect(page.get_by_label("Console token")).to_be_visible()
    assert await page.locator("#log").count() == 0

    await page.get_by_label("Console token").fill("not-the-console-token")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("That is not the console token.", timeout=WAIT_MS)
    await page.screenshot(path=artifacts / "refused.png", full_page=True)

    async with aiohttp.ClientSession() as session:
        base = f"{relay.http_url}/console"
        for method, path in (
            ("GET", "/stream?app_id=1001"),
            ("GET", "/apps"),
            ("GET", "/static/console.js"),
            ("POST", "/events"),
        ):
            async with session.request(method, base + path, headers={"Authorization": "Bearer wrong"}) as answer:
                assert answer.status == 401, path
                body = await answer.json()
                assert set(body) == {"error"}, path
        async with session.get(base, cookies={"relay_console": "forged"}) as answer:
            assert answer.status == 401
            assert "relay console: log in" in await answer.text()


async def test_console_is_off_without_a_token(relay_factory: RelayFactory) -> None:
    relay = relay_factory(app_config())
    async with aiohttp.ClientSession() as session, session.get(f"{relay.http_url}/console") as answer:
        assert answer.status == 404


async def test_console_of_one_node_shows_a_client_of_the_other_node(
    relay_factory: RelayFactory, redis_process: RedisProcess, clients: Clients, browser: Browser, artifacts: Path
) -> None:
    node_a = relay_factory(console_config(redis_url=redis_process.url))
    node_b = relay_factory(console_config(redis_url=redis_process.url))
    page = await browser.new_page(viewport={"width": 1366, "height": 800})
    await log_in(page, node_a)

    client = await clients.pusher_js(node_b.port, user=ANN)
    connected = await client.expect(type="connected")
    await subscribe(client, "presence-lobby")

    # Cluster state: the channel and its member, though node A holds no connection.
    lobby = page.locator("#channels tbody tr").filter(has_text="presence-lobby")
    await expect(lobby).to_contain_text("ann", timeout=WAIT_MS)
    # The live log relayed from node B, named by its port.
    subscribed = log_row(page, "subscribed", "presence-lobby")
    await expect(subscribed).to_contain_text(f":{node_b.port}:", timeout=WAIT_MS)
    await expect(page.locator("#fig-connections")).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator("#fig-nodes")).to_have_text("2", timeout=WAIT_MS)

    await python_trigger(node_a.port, "presence-lobby", "hello", {"n": 1})
    await client.expect(type="event", channel="presence-lobby", event="hello")
    await expect(log_row(page, "api_event", "hello")).to_have_count(1, timeout=WAIT_MS)
    await client.send({"op": "disconnect"})
    await expect(log_row(page, "disconnected", connected["socket_id"])).to_have_count(1, timeout=WAIT_MS)
    await page.screenshot(path=artifacts / "cluster.png", full_page=True)

"""examples/incidents in headless Chromium: presence, client events between two pages, and the
backend's webhook receiver storing incidents in SQLite and posting to a fake Slack."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from tests.browser.harness import (
    TIMEOUT,
    ExampleServer,
    ManagedProcess,
    channel_auth_status,
    free_port,
    screenshot,
    start_example_relay,
)

# The backend is another process: nothing to await on its SQLite file, so it is read again
# after this pause until the deadline.
POLL_INTERVAL = 0.1


class FakeSlack:
    """A real HTTP server that accepts incoming-webhook posts (`{"text": …}`) and keeps them."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.texts.append(body["text"])
        return web.Response(text="ok")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/services/T000/B000/XXXX", fake.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/services/T000/B000/XXXX"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def wait_for_rows(database: Path, query: str, ready: Callable[[list[Any]], bool]) -> list[Any]:
    rows: list[Any] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                rows = db.execute(query).fetchall()
            if ready(rows):
                return rows
            await asyncio.sleep(POLL_INTERVAL)


async def log_in_page(browser: Browser, server: ExampleServer, name: str) -> Page:
    page = await (await browser.new_context(viewport={"width": 900, "height": 560})).new_page()
    await page.goto(server.url)
    await page.fill("#login input[name=name]", name)
    await page.click("#login button")
    await expect(page.locator("#state")).to_have_text("connected")
    await expect(page.locator("#on-duty li.me")).to_have_text(name)
    return page


async def raise_incident(page: Page, kind: str, location: str, urgency: str, description: str) -> None:
    await page.select_option("#raise select[name=type]", kind)
    await page.fill("#raise input[name=location]", location)
    await page.select_option("#raise select[name=urgency]", urgency)
    await page.fill("#raise input[name=description]", description)
    await page.click("#raise button")


async def test_incidents_reach_the_other_page_the_store_and_slack(
    browser: Browser, processes: list[ManagedProcess], slack: FakeSlack, tmp_path: Path
) -> None:
    relay_port = free_port()
    server = ExampleServer("incidents", tmp_path, {"PUSHER_PORT": str(relay_port), "SLACK_WEBHOOK_URL": slack.url})
    processes.append(server)
    webhook = {
        "url": f"{server.url}/webhooks/relay",
        "event_types": ["client_event", "member_added", "member_removed"],
        "channel_prefix": "presence-duty",
    }
    settings = {"webhook": {"batch_window": 0.05, "leave_delay": 0.5}}
    relay = start_example_relay(
        tmp_path, {"enable_client_events": True, "webhooks": [webhook]}, port=relay_port, settings=settings
    )
    processes.append(relay)

    assert await channel_auth_status(server, "alice", "presence-other") == 403
    alice = await log_in_page(browser, server, "alice")
    bob = await log_in_page(browser, server, "bob")
    await expect(alice.locator("#on-duty li")).to_have_text(["alice", "bob"])
    await expect(bob.locator("#on-duty li")).to_have_text(["alice", "bob"])

    await raise_incident(alice, "fire", "Kitchen, building A", "high", "smoke from the oven")
    await raise_incident(alice, "medical", "Gym", "medium", "twisted ankle")
    await raise_incident(alice, "facility", "Library", "low", "light flickers")
    await raise_incident(bob, "security", "Car park", "low", "gate stuck open")
    await expect(bob.locator("#incidents li .what")).to_have_text(
        [
            "security at Car park: gate stuck open",
            "facility at Library: light flickers",
            "medical at Gym: twisted ankle",
            "fire at Kitchen, building A: smoke from the oven",
        ]
    )
    await expect(bob.locator("#incidents li.high .by")).to_have_text("raised by alice")
    await expect(alice.locator("#incidents li", has_text="gate stuck open").locator(".by")).to_have_text(
        "raised by bob"
    )

    # Every incident is stored once, from relay's signed client_event webhooks; Slack got exactly
    # the high and medium ones.
    rows = await wait_for_rows(
        server.database,
        "select urgency, type, location, user_id, slack from incidents order by urgency, type",
        lambda rows: len(rows) == 4 and all(row[4] != "pending" for row in rows),
    )
    assert rows == [
        ("high", "fire", "Kitchen, building A", "1", "sent"),
        ("low", "facility", "Library", "1", "not sent"),
        ("low", "security", "Car park", "2", "not sent"),
        ("medium", "medical", "Gym", "1", "sent"),
    ]
    assert sorted(slack.texts) == [
        "[HIGH] fire at Kitchen, building A: smoke from the oven",
        "[MEDIUM] medical at Gym: twisted ankle",
    ]
    print("screenshot:", await screenshot(alice, "incidents"))

    # Who came on duty and who left, from member_added / member_removed.
    await wait_for_rows(server.database, "select 1 from duty_log", lambda rows: len(rows) == 2)
    await bob.context.close()
    await expect(alice.locator("#on-duty li")).to_have_text(["alice"])
    log = await wait_for_rows(
        server.database, "select user_id, event from duty_log order by id", lambda rows: len(rows) == 3
    )
    assert log == [("1", "member_added"), ("2", "member_added"), ("2", "member_removed")]

    # A webhook that relay did not sign is refused and stores nothing.
    async with aiohttp.ClientSession() as session:
        forged = b'{"time_ms":1,"events":[{"name":"member_added","channel":"presence-duty","user_id":"9"}]}'
        headers = {"X-Pusher-Key": "relay-key", "X-Pusher-Signature": "0" * 64, "Content-Type": "application/json"}
        async with session.post(f"{server.url}/webhooks/relay", data=forged, headers=headers) as response:
            assert response.status == 401
    assert len(await wait_for_rows(server.database, "select 1 from duty_log", lambda rows: True)) == 3

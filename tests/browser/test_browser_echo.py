"""examples/echo in headless Chromium: Laravel Echo (broadcaster 'reverb') configured from .env's
VITE_REVERB_* values, against a real relay and the example's server."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from playwright.async_api import Browser, Page, expect

from tests.browser.harness import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    ExampleServer,
    ManagedProcess,
    channel_auth_status,
    screenshot,
    start_example_relay,
)


async def log_in_page(browser: Browser, server: ExampleServer, name: str) -> Page:
    page = await (await browser.new_context(viewport={"width": 980, "height": 520})).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(server.url)
    await page.fill("#login input[name=name]", name)
    await page.click("#login button")
    await expect(page.locator("#who")).to_contain_text(name)
    await expect(page.locator("#state")).to_have_text("connected")
    assert errors == []
    return page


async def test_echo_public_private_presence_and_whisper(
    browser: Browser, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    relay = start_example_relay(tmp_path, {"enable_client_events": True})
    processes.append(relay)
    env = {
        "REVERB_APP_ID": APP_ID,
        "REVERB_APP_KEY": APP_KEY,
        "REVERB_APP_SECRET": APP_SECRET,
        "REVERB_HOST": "127.0.0.1",
        "REVERB_PORT": str(relay.port),
        "REVERB_SCHEME": "http",
    }
    server = ExampleServer("echo", tmp_path, env)
    processes.append(server)

    # The script Echo is configured by is served with .env's VITE_REVERB_* values in place.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/resources/js/echo.js") as response:
            source = await response.text()
        assert "broadcaster: 'reverb'" in source
        assert f'"VITE_REVERB_PORT": "{relay.port}"' in source
        assert "import.meta.env" not in source

    alice = await log_in_page(browser, server, "alice")  # tenant 1
    await expect(alice.locator("#members li")).to_have_text(["alice"])
    await expect(alice.locator("#room-log li")).to_have_text(["here: alice"])

    # A second page joins the presence room: alice's joining() fires, bob's here() lists both.
    bob = await log_in_page(browser, server, "bob")  # tenant 2
    await expect(bob.locator("#room-log li").last).to_have_text("here: alice, bob")
    await expect(alice.locator("#room-log li").first).to_have_text("bob joined")
    await expect(alice.locator("#members li")).to_have_text(["alice", "bob"])

    # Public channel: both pages get App\Events\OrderShipped through listen('OrderShipped').
    await bob.click("#ship")
    await expect(alice.locator("#orders li")).to_have_count(1)
    await expect(bob.locator("#orders li")).to_have_count(1)
    await expect(alice.locator("#orders li")).to_contain_text(["shipped to Lisbon"])

    # Private tenant channels: each tenant's .notification.created reaches its own page only.
    await alice.click("#notify")
    await expect(alice.locator("#notifications li")).to_have_text(["Tenant 1: alice sent a notification"])
    await bob.click("#notify")
    await expect(bob.locator("#notifications li")).to_have_text(["Tenant 2: bob sent a notification"])
    await expect(alice.locator("#notifications li")).to_have_text(["Tenant 1: alice sent a notification"])

    # Whisper: bob types, alice's listenForWhisper('typing') fires.
    await bob.locator("#message").press_sequentially("hi")
    await expect(alice.locator("#typing")).to_have_text("bob is typing…")
    await expect(bob.locator("#typing")).to_have_text("")

    # bob leaves: alice's leaving() fires.
    await bob.context.close()
    await expect(alice.locator("#room-log li").first).to_have_text("bob left")
    await expect(alice.locator("#members li")).to_have_text(["alice"])
    print("screenshot:", await screenshot(alice, "echo"))

    # The server refuses another tenant's channel, as routes/channels.php would.
    assert await channel_auth_status(server, "bob", "private-commerce.1") == 403
    assert await channel_auth_status(server, "bob", "private-commerce.2") == 200

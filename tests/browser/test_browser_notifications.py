"""examples/notifications in headless Chromium against a real relay and the example's backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page, expect

from tests.browser.harness import (
    ExampleServer,
    ManagedProcess,
    channel_auth_status,
    scaled,
    screenshot,
    start_example_relay,
)
from tests.browser.tcp_proxy import CuttableProxy

# pusher-js retries a failed connection with growing delays; after the proxy is restored it may
# wait several seconds before its next attempt.
RECONNECT_TIMEOUT = scaled(40.0) * 1000


async def log_in_page(browser: Browser, server: ExampleServer, name: str) -> Page:
    page = await (await browser.new_context(viewport={"width": 760, "height": 640})).new_page()
    await page.goto(server.url)
    await page.fill("#login input[name=name]", name)
    await page.click("#login button")
    await expect(page.locator("#who")).to_have_text(name)
    await expect(page.locator("#state")).to_have_text("connected")
    return page


def titles(page: Page) -> Any:
    return page.locator("#notifications li .title")


async def api(
    session: aiohttp.ClientSession, server: ExampleServer, token: str, method: str, path: str, body: object = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, server.url + path, json=body, headers=headers) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def token_for(session: aiohttp.ClientSession, server: ExampleServer, name: str) -> str:
    async with session.post(f"{server.url}/login", json={"name": name, "password": "password"}) as response:
        assert response.status == 200, await response.text()
        token: str = (await response.json())["token"]
        return token


async def test_two_users_broadcast_reads_and_a_cut_connection(
    browser: Browser, processes: list[ManagedProcess], tmp_path: Path
) -> None:
    relay = start_example_relay(tmp_path)
    processes.append(relay)
    proxy = CuttableProxy(relay.port)
    await proxy.start()
    server = ExampleServer(
        "notifications", tmp_path, {"PUSHER_PORT": str(relay.port), "PUSHER_WS_PORT": str(proxy.port)}
    )
    processes.append(server)
    try:
        async with aiohttp.ClientSession() as session:
            await run_scenario(browser, server, proxy, session)
    finally:
        await proxy.close()


async def run_scenario(
    browser: Browser, server: ExampleServer, proxy: CuttableProxy, session: aiohttp.ClientSession
) -> None:
    alice = await log_in_page(browser, server, "alice")
    bob = await log_in_page(browser, server, "bob")
    admin = await log_in_page(browser, server, "admin")
    await expect(alice.locator("#badge")).to_have_text("0")

    # alice sends bob a notification from her page: only bob's page shows it.
    await alice.select_option("#send select", label="bob")
    await alice.fill("#send input[name=title]", "Lunch at noon")
    await alice.click("#send button")
    await expect(titles(bob)).to_have_text(["Lunch at noon"])
    await expect(bob.locator("#badge")).to_have_text("1")

    alice_token = await token_for(session, server, "alice")
    admin_token = await token_for(session, server, "admin")
    await api(session, server, admin_token, "POST", "/api/notifications", {"user_id": 1, "title": "Deploy finished"})
    await expect(titles(alice)).to_have_text(["Deploy finished"])
    await expect(alice.locator("#badge")).to_have_text("1")
    await expect(titles(bob)).to_have_text(["Lunch at noon"])

    # The admin's maintenance alert reaches both.
    await admin.fill("#maintenance input[name=message]", "Database upgrade at 22:00")
    await admin.click("#maintenance button")
    await expect(titles(alice)).to_have_text(["Maintenance", "Deploy finished"])
    await expect(titles(bob)).to_have_text(["Maintenance", "Lunch at noon"])
    await expect(alice.locator("#badge")).to_have_text("2")
    await expect(bob.locator("#badge")).to_have_text("2")

    # The badge follows reads.
    await bob.locator("#notifications li", has_text="Lunch at noon").locator("button.mark-read").click()
    await expect(bob.locator("#badge")).to_have_text("1")
    await expect(bob.locator("#notifications li.unread .title")).to_have_text(["Maintenance"])
    await expect(alice.locator("#badge")).to_have_text("2")

    # Nobody may subscribe to someone else's channel.
    assert await channel_auth_status(server, "bob", "private-user.1") == 403
    assert await channel_auth_status(server, "bob", "private-user.2") == 200

    # Cut alice's and bob's connections; what happens meanwhile reaches alice only by the refetch
    # her page makes after reconnecting.
    proxy.cut()
    await expect(alice.locator("#state")).not_to_have_text("connected")
    await expect(bob.locator("#state")).not_to_have_text("connected")
    await api(
        session, server, admin_token, "POST", "/api/notifications", {"user_id": 1, "title": "While you were away"}
    )
    deploy = await api(session, server, alice_token, "GET", "/api/notifications")
    deploy_id = next(n["id"] for n in deploy["notifications"] if n["title"] == "Deploy finished")
    await api(session, server, alice_token, "POST", f"/api/notifications/{deploy_id}/read")
    await expect(titles(alice)).to_have_text(["Maintenance", "Deploy finished"])  # still cut off

    proxy.restore()
    await expect(alice.locator("#state")).to_have_text("connected", timeout=RECONNECT_TIMEOUT)
    await expect(titles(alice)).to_have_text(["While you were away", "Maintenance", "Deploy finished"])
    await expect(alice.locator("#badge")).to_have_text("2")
    await expect(alice.locator("#notifications li.unread .title")).to_have_text(["While you were away", "Maintenance"])
    backend = await api(session, server, alice_token, "GET", "/api/notifications")
    assert [n["title"] for n in backend["notifications"]] == await titles(alice).all_inner_texts()
    assert backend["unread_count"] == 2

    # Live events flow again after the reconnect, and bob never saw alice's.
    await expect(bob.locator("#state")).to_have_text("connected", timeout=RECONNECT_TIMEOUT)
    await api(session, server, admin_token, "POST", "/api/notifications", {"user_id": 2, "title": "Welcome back"})
    await expect(titles(bob)).to_have_text(["Welcome back", "Maintenance", "Lunch at noon"])
    await expect(titles(alice)).to_have_text(["While you were away", "Maintenance", "Deploy finished"])

    print("screenshot:", await screenshot(alice, "notifications"))

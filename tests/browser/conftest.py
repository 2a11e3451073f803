"""Fixtures for the browser suite: headless Chromium from Debian's `chromium` package driven by
Playwright (never a downloaded browser), and the processes a test starts, stopped by PID."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser.harness import (
    CHROMIUM,
    ManagedProcess,
    node_factory,  # noqa: F401  (pusher-js clients; pytest finds fixtures by name)
)


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    """Processes a test starts; stopped by PID at teardown, last first."""
    started: list[ManagedProcess] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does it)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            await browser.close()

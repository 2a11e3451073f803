"""Fixtures for the console tests: relay with a console token, headless Chromium through Playwright,
pusher-js clients, and a directory where screenshots are kept as test artefacts."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from playwright.async_api import Browser, async_playwright

from tests.clients.harness import Clients
from tests.support.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    NodeFactory,
    node_factory,
    redis_process,
    relay_factory,
)

CONSOLE_TOKEN: Final = "console-test-token-0123456789"
# Debian's package; Playwright's own browser download is never used.
CHROMIUM: Final = Path(os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium"))
# Screenshots land here (RELAY_TEST_ARTIFACTS overrides), one directory per test.
ARTIFACTS: Final = Path(os.environ.get("RELAY_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or set RELAY_TEST_CHROMIUM)")
    async with async_playwright() as playwright:
        # --no-sandbox: test containers often run as root, where Chromium's sandbox refuses to start.
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    directory = ARTIFACTS / "console" / re.sub(r"[^\w.-]+", "_", request.node.name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def clients(node_factory: NodeFactory) -> Clients:  # noqa: F811
    return Clients(node_factory)

"""What the browser tests share: each example's backend as a subprocess, relay configured for the
examples, and screenshots kept as artefacts. The one place this suite uses tests/support."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from playwright.async_api import Page, expect

from tests.support.fixtures import node_factory
from tests.support.ports import free_port
from tests.support.process import ManagedProcess
from tests.support.redis import start_redis
from tests.support.relay import RelayProcess, http_status, start_relay
from tests.support.timeouts import STARTUP_TIMEOUT, TIMEOUT, scaled

# Test modules import tests/support only through this module.
__all__ = [
    "APP_ID",
    "APP_KEY",
    "APP_SECRET",
    "TIMEOUT",
    "ExampleServer",
    "ManagedProcess",
    "RelayProcess",
    "channel_auth_status",
    "free_port",
    "node_factory",
    "scaled",
    "screenshot",
    "start_example_relay",
    "start_redis",
    "start_relay",
]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
APP_ID, APP_KEY, APP_SECRET = "1001", "relay-key", "relay-secret"

expect.set_options(timeout=TIMEOUT * 1000)


class ExampleServer(ManagedProcess):
    """`python -m examples.<name>.server` on a free port, with its own SQLite file."""

    def __init__(self, name: str, workdir: Path, env: Mapping[str, str], port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.database = workdir / f"{name}.db"
        child_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PORT": str(self.port),
            "DATABASE": str(self.database),
            "PUSHER_APP_ID": APP_ID,
            "PUSHER_APP_KEY": APP_KEY,
            "PUSHER_APP_SECRET": APP_SECRET,
            **env,
        }
        argv = [sys.executable, "-m", f"examples.{name}.server"]
        super().__init__(f"example-{name}:{self.port}", argv, workdir / f"{name}.log", env=child_env, cwd=ROOT)
        self.wait_until(lambda: http_status(f"{self.url}/up") == 200, "GET /up answering 200", STARTUP_TIMEOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def channel_auth_status(server: ExampleServer, name: str, channel: str) -> int:
    """The HTTP status of the example's /broadcasting/auth when demo user `name` asks for `channel`."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/login", json={"name": name, "password": "password"}) as response:
            assert response.status == 200, await response.text()
            token = (await response.json())["token"]
        async with session.post(
            f"{server.url}/broadcasting/auth",
            data={"socket_id": "1.1", "channel_name": channel},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            return response.status


def start_example_relay(
    workdir: Path,
    app_extra: Mapping[str, object] | None = None,
    port: int | None = None,
    settings: Mapping[str, object] | None = None,
) -> RelayProcess:
    """relay with the examples' app (plus `app_extra` fields) and top-level `settings`."""
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, **(app_extra or {})}
    config: dict[str, object] = {**(settings or {}), "apps": [app]}
    return start_relay(config, workdir=workdir / "relay", port=port)


async def screenshot(page: Page, name: str) -> Path:
    """Keep a screenshot as a test artefact (tests/browser/artifacts, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

"""What every example backend needs from relay: the official `pusher` SDK client (publishing,
channel auth, webhook checks) configured from the environment, the page's connection settings,
and the pusher-js / laravel-echo files from examples/node_modules served without a CDN."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pusher
from aiohttp import web

from .accounts import json_error

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent
NODE_MODULES = EXAMPLES / "node_modules"
# URL path -> file in node_modules: the browser builds of the two client libraries.
VENDOR_FILES = {
    "/vendor/pusher.min.js": NODE_MODULES / "pusher-js" / "dist" / "web" / "pusher.min.js",
    "/vendor/echo.js": NODE_MODULES / "laravel-echo" / "dist" / "echo.js",
}


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where relay is, for the SDK (host/port) and for the page (ws_host/ws_port, which may differ,
    e.g. behind a proxy)."""

    app_id: str
    key: str
    secret: str
    host: str
    port: int
    ws_host: str
    ws_port: int

    @classmethod
    def from_env(cls) -> RelaySettings:
        env = os.environ
        host = env.get("PUSHER_HOST", "127.0.0.1")
        port = int(env.get("PUSHER_PORT", "8080"))
        return cls(
            app_id=env.get("PUSHER_APP_ID", "1001"),
            key=env.get("PUSHER_APP_KEY", "relay-key"),
            secret=env.get("PUSHER_APP_SECRET", "relay-secret"),
            host=host,
            port=port,
            ws_host=env.get("PUSHER_WS_HOST", host),
            ws_port=int(env.get("PUSHER_WS_PORT", str(port))),
        )

    def client(self) -> pusher.Pusher:
        return pusher.Pusher(
            app_id=self.app_id, key=self.key, secret=self.secret, host=self.host, port=self.port, ssl=False
        )

    def page_config(self) -> dict[str, object]:
        """What the page passes to `new Pusher(key, {...})`."""
        return {"key": self.key, "wsHost": self.ws_host, "wsPort": self.ws_port}


class Publisher:
    """Triggers events through the SDK (blocking HTTP) on a worker thread, so the backend's loop
    never waits on it. The database is the record: when relay cannot be reached the event is
    logged and dropped, and pages catch up when they refetch after reconnecting."""

    def __init__(self, client: pusher.Pusher) -> None:
        self._client = client

    async def trigger_batch(self, events: list[dict[str, Any]]) -> bool:
        """Publish `events` ({"channel", "name", "data"}); False when relay did not take them all."""
        try:
            for start in range(0, len(events), 10):  # the HTTP API's batch limit
                await asyncio.to_thread(self._client.trigger_batch, events[start : start + 10])
        except Exception:
            logger.exception("publishing %d event(s) to relay failed", len(events))
            return False
        return True


async def read_channel_auth_form(request: web.Request) -> tuple[str, str]:
    """(socket_id, channel_name) from pusher-js's form-encoded channel authorization request."""
    form = await request.post()
    socket_id, channel = form.get("socket_id"), form.get("channel_name")
    if not isinstance(socket_id, str) or not isinstance(channel, str) or not socket_id or not channel:
        raise json_error(400, "send socket_id and channel_name as form fields")
    return socket_id, channel


def add_vendor_routes(app: web.Application) -> None:
    """Serve the client libraries from node_modules; fail at start-up when `npm ci` was not run."""
    for path, file in VENDOR_FILES.items():
        if not file.is_file():
            raise SystemExit(f"{file} is missing: run `npm ci` in {EXAMPLES}")
        app.router.add_get(path, _file_handler(file))


def _file_handler(file: Path) -> Any:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(file)

    return handler

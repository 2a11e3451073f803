"""What the Node client tests share: the test app, script paths, SDK publishers and a client starter."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pusher  # type: ignore[import-untyped]

from tests.support import NodeClient
from tests.support.fixtures import NodeFactory

JS: Final = Path(__file__).parent / "js"
PUSHER_CLIENT: Final = JS / "pusher_client.mjs"
ECHO_CLIENT: Final = JS / "echo_client.mjs"
TRIGGER: Final = JS / "trigger.mjs"

APP_ID: Final = "1001"
APP_KEY: Final = "app-key"
APP_SECRET: Final = "app-secret"
# 32 bytes for private-encrypted- channels; only the SDKs and pusher-js know it, never relay.
ENCRYPTION_MASTER_KEY_BASE64: Final = base64.b64encode(b"relay-test-master-key-32-bytes!!").decode()

SOCKET_ID_RE: Final = re.compile(r"^\d+\.\d+$")


def app_config(**overrides: object) -> dict[str, object]:
    """relay config with the one test app; `overrides` change that app's settings."""
    app: dict[str, object] = {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "enable_client_events": True,
        **overrides,
    }
    return {"apps": [app]}


def python_sdk(port: int) -> pusher.Pusher:
    """The official Python server SDK pointed at 127.0.0.1:`port` (relay or a proxy before it)."""
    return pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=port, ssl=False)


async def python_trigger(port: int, channel: str, event: str, data: object) -> None:
    """Publish with the Python SDK (it raises on any non-2xx answer); runs off the event loop."""
    await asyncio.to_thread(python_sdk(port).trigger, [channel], event, data)


@dataclass
class Clients:
    """Starts client scripts connected to relay (or to a proxy at `port`)."""

    start: NodeFactory

    def _params(self, port: int, extra: Mapping[str, Any]) -> dict[str, Any]:
        return {"ws_host": "127.0.0.1", "ws_port": port, "app_id": APP_ID, "key": APP_KEY,
                "secret": APP_SECRET, **extra}  # fmt: skip

    async def pusher_js(self, port: int, name: str = "pusher-js", **params: Any) -> NodeClient:
        """pusher_client.mjs, returned once pusher-js reports `connected` (that line stays unclaimed)."""
        client = await self.start(PUSHER_CLIENT, self._params(port, params), name)
        await client.expect(type="connected", claim=False)
        return client

    async def echo(self, port: int, name: str = "echo", **params: Any) -> NodeClient:
        """echo_client.mjs, returned once its pusher-js connection reports `connected`."""
        client = await self.start(ECHO_CLIENT, self._params(port, params), name)
        await client.expect(type="connected", claim=False)
        return client

    async def node_trigger(self, port: int, **params: Any) -> dict[str, Any]:
        """Run trigger.mjs (the Node server SDK) once and return its one result line."""
        script = await self.start(TRIGGER, {**self._params(port, {}), "http_port": port, **params}, "node-sdk")
        return await script.expect(lambda line: line["type"] in ("response", "request_failed"))


async def subscribe(client: NodeClient, channel: str) -> dict[str, Any]:
    """Subscribe a pusher_client.mjs client and return its `subscribed` line."""
    await client.send({"op": "subscribe", "channel": channel})
    return await client.expect(type="subscribed", channel=channel)


async def echo_subscribe(
    client: NodeClient, kind: str, name: str, listen: list[str] | None = None, whispers: list[str] | None = None
) -> dict[str, Any]:
    """Subscribe an echo_client.mjs client (`kind`: public, private, presence); return its `subscribed` line."""
    await client.send(
        {"op": "subscribe", "kind": kind, "name": name, "listen": listen or [], "whispers": whispers or []}
    )
    return await client.expect(type="subscribed", name=name)

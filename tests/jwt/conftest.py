"""In-process relay servers (tests.support's relay_server, on both transports) with apps that authorise with JWTs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import aiohttp
import pusher  # type: ignore[import-untyped]
import pytest
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from relay.config import AppConfig
from relay.jwt.settings import JwtSettings
from tests.jwt.tokens import JWT_SECRET, OTHER_APP_JWT_SECRET
from tests.support.inprocess import APP, RelayServer, RelayServerFactory
from tests.support.timeouts import TIMEOUT

ENCRYPTION_MASTER_KEY_BASE64: Final = "cmVsYXktdGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzISE="  # 32 bytes
JWT_APP: Final = replace(
    APP, jwt=JwtSettings(secret=JWT_SECRET, encryption_master_key_base64=ENCRYPTION_MASTER_KEY_BASE64)
)
OTHER_APP: Final = AppConfig(
    id="1002", key="other-key", secret="other-secret", jwt=JwtSettings(secret=OTHER_APP_JWT_SECRET)
)


def server_sdk(server: RelayServer) -> Any:
    """The official Python server SDK for the test app, sending to `server`."""
    return pusher.Pusher(app_id=APP.id, key=APP.key, secret=APP.secret, host="127.0.0.1", port=server.port, ssl=False)


def metric_samples(server: RelayServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric `name` as /metrics renders it, by its sorted labels."""
    text, _ = server.node.metrics.render()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name
    }


def with_jwt(**settings: Any) -> AppConfig:
    """The test app with these `[apps.jwt]` settings."""
    return replace(APP, jwt=JwtSettings(**settings))


@pytest.fixture
async def server(relay_server: RelayServerFactory) -> RelayServer:
    """The HS256 test app and a second app with its own JWT secret."""
    return await relay_server(JWT_APP, OTHER_APP)


class AuthClient:
    """POSTs to relay's auth endpoints as pusher-js does (url-encoded form, Bearer header)."""

    def __init__(self, session: aiohttp.ClientSession, port: int, app_id: str = APP.id) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}/apps/{app_id}"

    async def post(
        self,
        endpoint: str,
        form: dict[str, str],
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(
            f"{self.base}/{endpoint}", data=form, headers=all_headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
        ) as response:
            body = await response.json(content_type=None)
            return response.status, body, response.headers

    async def channel(self, token: str | None, socket_id: str, channel: str, **headers: str) -> tuple[int, Any]:
        status, body, _ = await self.post("auth", {"socket_id": socket_id, "channel_name": channel}, token, headers)
        return status, body

    async def user(self, token: str | None, socket_id: str) -> tuple[int, Any]:
        status, body, _ = await self.post("user-auth", {"socket_id": socket_id}, token)
        return status, body


@pytest.fixture
def auth(server: RelayServer, http: aiohttp.ClientSession) -> AuthClient:
    return AuthClient(http, server.port)

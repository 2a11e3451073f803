"""Webhook test harness: a real receiver that validates with the official `pusher` SDK, relay in-process on
127.0.0.1:0 (tests.support.inprocess, on `relay serve`'s default transport), and a wire-level Pusher client on
the `websockets` library."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import orjson
import pusher
import pytest
import websockets
from aiohttp import web
from pusher.http import Request as PusherRequest

from relay.adapters.local import LocalAdapter
from relay.app import WEBHOOKS_KEY
from relay.config import AppConfig, Config, RedisConfig, WebhookConfig, WebhookSettings
from relay.webhooks import WebhookCounters, WebhookDispatcher
from tests.support.inprocess import RelayServer, server_config, start_in_process
from tests.support.timeouts import TIMEOUT, scaled

APP_ID: Final = "1001"  # the Python SDK wants a numeric app id
KEY: Final = "webhook-key"
SECRET: Final = "webhook-secret"
DELIVERY_ID: Final = "X-Relay-Delivery-Id"

Answer = int | Literal["stall"]


@dataclass
class ReceivedRequest:
    delivery_id: str
    payload: dict[str, Any]
    answered: int | None = None  # status we answered; None while stalled

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.payload["events"]
        return events


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1. Every request is checked with `pusher.Pusher.validate_webhook` and for
    the exact Content-Type; anything wrong lands in `problems`. Answers come from `answers` (then `default`);
    "stall" holds the request open until `release` is set."""

    key: str = KEY
    secret: str = SECRET
    default: Answer = 200
    answers: deque[Answer] = field(default_factory=deque)
    requests: list[ReceivedRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/{name:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self.url

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type")
        if content_type != "application/json":
            self.problems.append(f"Content-Type is {content_type!r}")
        client = pusher.Pusher(app_id=APP_ID, key=self.key, secret=self.secret)
        payload = client.validate_webhook(
            key=request.headers.get("X-Pusher-Key", ""),
            signature=request.headers.get("X-Pusher-Signature", ""),
            body=body.decode(),
        )
        if payload is None:
            self.problems.append(f"pusher SDK refused the webhook: {body!r}")
            payload = json.loads(body)
        received = ReceivedRequest(request.headers.get(DELIVERY_ID, ""), payload)
        if not received.delivery_id:
            self.problems.append("no delivery id header")
        answer = self.answers.popleft() if self.answers else self.default
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        if answer == "stall":
            await self.release.wait()
            answer = 200
        received.answered = answer
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=answer, text="{}", content_type="application/json")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    @property
    def delivered(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.answered is not None and request.answered < 300]

    def delivered_events(self) -> list[dict[str, Any]]:
        return [event for request in self.delivered for event in request.events]

    def stalled(self) -> int:
        return sum(1 for request in self.requests if request.answered is None)


def event_key(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def same_events(actual: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]]) -> bool:
    return sorted(map(event_key, actual)) == sorted(map(event_key, expected))


def settings(**overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "batch_window": 0.05,
        "leave_delay": 0.3,
        "retry_for": scaled(2.0),
        "request_timeout": scaled(2.0),
        "shutdown_deadline": scaled(2.0),
    }
    values.update(overrides)
    return WebhookSettings(**values)


def relay_config(
    hooks: Sequence[WebhookConfig],
    webhook: WebhookSettings | None = None,
    redis: RedisConfig | None = None,
) -> Config:
    app = AppConfig(
        id=APP_ID,
        key=KEY,
        secret=SECRET,
        enable_client_events=True,
        client_event_rate=0.0,
        webhooks=tuple(hooks),
    )
    return server_config(app, transport="lean", redis=redis, webhook=webhook or settings())


def redis_config(url: str, prefix: str, node_timeout: float = 1.0) -> RedisConfig:
    return RedisConfig(url=url, prefix=prefix, node_timeout=scaled(node_timeout))


def unique_prefix() -> str:
    return f"relay-test-{secrets.token_hex(4)}"


class WebhookRelay:
    """An in-process relay as the webhook tests see it: its dispatcher, URLs for the app KEY, and stop()."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.app = server.app
        self.port = server.port

    @property
    def webhooks(self) -> WebhookDispatcher:
        return self.app[WEBHOOKS_KEY]

    @property
    def ws_url(self) -> str:
        return self.server.ws_url(KEY)

    @property
    def http_url(self) -> str:
        return self.server.http_url

    async def stop(self) -> None:
        """The graceful shutdown (connections closed, queued webhooks flushed); safe to call twice."""
        await self.server.stop()


RelayStarter = Callable[[Config], Awaitable[WebhookRelay]]


@pytest.fixture
async def relays() -> AsyncIterator[RelayStarter]:
    """Starts relays in-process; every one still running is shut down at teardown."""
    started: list[WebhookRelay] = []

    async def start(config: Config) -> WebhookRelay:
        # In-process Redis-mode nodes run the local adapter: these tests are about the webhook store (queue,
        # held leaves, dead letters shared through Redis by the dispatcher itself). Cluster-wide transitions
        # through the Redis adapter are tested with `relay serve` subprocesses in test_webhooks_cluster.py.
        adapter = LocalAdapter() if config.redis is not None else None
        started.append(WebhookRelay(await start_in_process(config, adapter)))
        return started[-1]

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


class Client:
    """One Pusher protocol v7 connection, spoken frame by frame."""

    def __init__(self, ws: websockets.ClientConnection, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id
        self.auth = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)

    @classmethod
    async def connect(cls, url: str) -> Client:
        # Unbounded: with websockets' default queue, a client that did not read every frame could not read
        # the close frame either, and close() would wait out its 10 s timeout.
        ws = await websockets.connect(url, max_queue=None)
        async with asyncio.timeout(TIMEOUT):
            frame = json.loads(await ws.recv())
        assert frame["event"] == "pusher:connection_established", frame
        return cls(ws, json.loads(frame["data"])["socket_id"])

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def expect(self, event: str, channel: str | None = None) -> dict[str, Any]:
        """The next frame named `event` (on `channel`), skipping others."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame: dict[str, Any] = json.loads(await self.ws.recv())
                if frame.get("event") == event and (channel is None or frame.get("channel") == channel):
                    return frame

    async def subscribe(self, channel: str, user_id: str | None = None) -> None:
        data: dict[str, Any] = {"auth": "", "channel": channel}
        if channel.startswith(("private-", "presence-")):
            presence = channel.startswith("presence-")
            custom = {"user_id": user_id, "user_info": {"name": f"user {user_id}"}} if presence else None
            data.update(self.auth.authenticate(channel, self.socket_id, custom))
        await self.send({"event": "pusher:subscribe", "data": data})
        await self.expect("pusher_internal:subscription_succeeded", channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    async def whisper(self, channel: str, event: str, data: dict[str, Any]) -> None:
        await self.send({"event": event, "data": data, "channel": channel})

    async def ping(self) -> None:
        await self.send({"event": "pusher:ping", "data": {}})
        await self.expect("pusher:pong")

    async def close(self) -> None:
        await self.ws.close()


async def signed_request(
    server: WebhookRelay, method: Literal["GET", "POST"], path: str, params: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """A request signed by the official SDK's own signer (pusher.http.Request), sent with aiohttp."""
    client = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host="127.0.0.1", port=server.port, ssl=False)
    request = PusherRequest(client._pusher_client, method, path, params or {})
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"{server.http_url}{request.signed_path}",
            data=request.body if method == "POST" else None,
            headers=request.headers,
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def wait_for_counters(server: WebhookRelay, predicate: Callable[[WebhookCounters], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        await server.webhooks.wait_for(predicate)


async def wait_for_cluster(servers: Sequence[WebhookRelay], predicate: Callable[[list[WebhookCounters]], bool]) -> None:
    """Wait until `predicate` holds over every node's counters, waking whenever any node makes progress."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate([server.webhooks.counters for server in servers]):
            waiters = [asyncio.ensure_future(server.webhooks.changed()) for server in servers]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

"""The console's stream and test-event endpoint against an in-process relay: what a line carries (and
never carries), the line budget a page is told about, the end of streams at shutdown, bad test events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.config import WebhookConfig, WebhookSettings
from relay.console.auth import FAILED_LOGIN_BURST
from tests.integration.wire import TIMEOUT, auth_sdk, private_auth
from tests.support.inprocess import APP, RelayServer, RelayServerFactory

TOKEN: Final = "console-integration-token-0123"
BEARER: Final = {"Authorization": f"Bearer {TOKEN}"}


class Stream:
    """An open console stream: its messages as (event, payload), in order."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.raw = b""
        self.lines: list[dict[str, Any]] = []

    async def next(self) -> tuple[str, Any]:
        while b"\n\n" not in self.raw:
            chunk = await self.response.content.readany()
            if not chunk:
                raise EOFError("the console stream ended")
            self.raw += chunk
        message, self.raw = self.raw.split(b"\n\n", 1)
        event, _, data = message.partition(b"\ndata: ")
        return event.removeprefix(b"event: ").decode(), orjson.loads(data)

    async def line(self, kind: str, **fields: str) -> dict[str, Any]:
        """The first log line of `kind` with `fields` (every line received is kept in `lines`)."""

        def find() -> dict[str, Any] | None:
            for line in self.lines:
                if line["kind"] == kind and all(line[name] == value for name, value in fields.items()):
                    return line
            return None

        async with asyncio.timeout(TIMEOUT):
            while (found := find()) is None:
                event, payload = await self.next()
                if event == "log":
                    self.lines.extend(payload)
        return found


@asynccontextmanager
async def console_stream(relay: RelayServer) -> AsyncIterator[Stream]:
    url = f"http://127.0.0.1:{relay.port}/console/stream?app_id={APP.id}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=BEARER) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        stream = Stream(response)
        async with asyncio.timeout(TIMEOUT):
            assert (await stream.next())[0] == "status"  # sent at once: the page is open
        yield stream


async def test_lines_show_subscriptions_and_payloads_but_never_auth_signatures_or_secrets(
    relay_server: RelayServerFactory,
) -> None:
    relay = await relay_server(console_token=TOKEN)
    async with console_stream(relay) as stream:
        client = await relay.connect()
        auth = private_auth(auth_sdk(APP.id, APP.key, APP.secret), client.socket_id, "private-chat")
        await client.subscribed("private-chat", auth)
        await client.send({"event": "client-typing", "channel": "private-chat", "data": {"who": "ann"}})
        await client.subscribe("private-other", "app-key:0000")

        subscribed = await stream.line("subscribed", channel="private-chat")
        assert subscribed["socket_id"] == client.socket_id
        typing = await stream.line("client_event", event="client-typing")
        assert typing["data"] == '{"who":"ann"}'
        refused = await stream.line("subscription_error", channel="private-other")
        assert "AuthError" in refused["detail"]
        everything = stream.raw + orjson.dumps(stream.lines)
        assert auth.split(":")[1].encode() not in everything
        assert APP.secret.encode() not in everything
        await client.close()


async def test_a_page_is_told_how_many_lines_it_missed_over_the_budget(relay_server: RelayServerFactory) -> None:
    relay = await relay_server(console_token=TOKEN)
    app = relay.node.apps.by_id(APP.id)
    assert app is not None
    async with console_stream(relay) as stream:
        # 3,000 lines in well under a second: over the budget of 1,000 a second, even across two windows.
        for index in range(3_000):
            await relay.node.publish(app, ("flood",), "tick", str(index))
        async with asyncio.timeout(TIMEOUT):
            while True:
                event, payload = await stream.next()
                if event == "status" and payload["dropped"]:
                    break
        assert payload["dropped"] >= 1_000


async def test_streams_end_when_shutdown_begins(relay_server: RelayServerFactory) -> None:
    relay = await relay_server(console_token=TOKEN)
    async with console_stream(relay) as stream:
        relay.node.accepting = False
        async with asyncio.timeout(TIMEOUT):
            try:
                while True:
                    await stream.next()
            except EOFError:
                pass
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{relay.port}/console/stream?app_id={APP.id}"
        async with session.get(url, headers=BEARER) as response:
            assert response.status == 503


async def test_a_bad_test_event_gets_a_clear_4xx(relay_server: RelayServerFactory) -> None:
    relay = await relay_server(console_token=TOKEN)
    url = f"http://127.0.0.1:{relay.port}/console/events"
    good = {"app_id": APP.id, "channel": "news", "event": "hello", "data": "{}"}
    cases: list[tuple[dict[str, Any] | str, int, str]] = [
        ({**good, "channel": "bad channel!"}, 400, "Channel name"),
        ({**good, "event": ""}, 400, "Event name"),
        ({**good, "data": {"not": "a string"}}, 400, "strings"),
        ({**good, "app_id": "nope"}, 404, "app_id"),
        ({**good, "data": "x" * (APP.max_event_size + 1)}, 413, "exceeds"),
        ("[1, 2]", 400, "object"),
    ]
    async with aiohttp.ClientSession() as session:
        for body, status, words in cases:
            payload = body if isinstance(body, str) else orjson.dumps(body).decode()
            headers = {**BEARER, "Content-Type": "application/json"}
            async with session.post(url, data=payload, headers=headers) as response:
                assert response.status == status, body
                assert words in (await response.json())["error"], body
        async with session.post(
            url, data=orjson.dumps(good), headers={**BEARER, "Content-Type": "text/plain"}
        ) as response:
            assert response.status == 415
        async with session.post(url, json=good, headers=BEARER) as response:
            assert (response.status, await response.json()) == (200, {"ok": True})


async def test_webhooks_sent_and_failed_show_their_host_and_events_never_their_url(
    relay_server: RelayServerFactory,
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.path == "/ok" else 500)

    receiver = web.Application()
    receiver.router.add_post("/{name}", answer)
    async with TestServer(receiver, host="127.0.0.1") as hooks:
        ok, failing = (f"http://127.0.0.1:{hooks.port}/{name}?token=hook-secret" for name in ("ok", "fail"))
        app = replace(APP, webhooks=(WebhookConfig(ok), WebhookConfig(failing)))
        # The failing delivery is still being retried at teardown: give it no time then.
        relay = await relay_server(app, console_token=TOKEN, webhook=WebhookSettings(shutdown_deadline=0.1))
        async with console_stream(relay) as stream:
            client = await relay.connect()
            await client.subscribed("news")
            sent = await stream.line("webhook_sent")
            failed = await stream.line("webhook_failed")
            assert sent["detail"] == "to 127.0.0.1: channel_occupied news"
            assert failed["detail"].startswith("to 127.0.0.1: channel_occupied news: ")
            assert b"hook-secret" not in stream.raw + orjson.dumps(stream.lines)
            await client.close()


async def test_wrong_tokens_from_one_address_are_slowed_down_and_the_answer_says_so(
    relay_server: RelayServerFactory,
) -> None:
    relay = await relay_server(console_token=TOKEN)
    base = f"http://127.0.0.1:{relay.port}/console"
    wrong = {"Authorization": "Bearer not-the-console-token-000"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/apps") as response:
            assert response.status == 401  # no token at all: not a guess, not counted
        for _ in range(int(FAILED_LOGIN_BURST)):
            async with session.get(f"{base}/apps", headers=wrong) as response:
                assert response.status == 401
        async with session.get(f"{base}/apps", headers=BEARER) as response:
            assert response.status == 429  # out of tries: even the right token waits
            retry_after = int(response.headers["Retry-After"])
            assert 1 <= retry_after <= 12
            assert "try again in" in (await response.json())["error"]
        async with session.post(f"{base}/login", data={"token": TOKEN}, allow_redirects=False) as response:
            assert response.status == 429  # the login form is the same door
            assert response.headers["Retry-After"] == str(retry_after)
            assert "Too many wrong console tokens" in await response.text()

"""Wire-level helpers: a Pusher WebSocket client over `websockets` and signed HTTP API calls built by the
official `pusher` SDK. Every wait is bounded by tests.support.timeouts.TIMEOUT."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson
import pusher  # type: ignore[import-untyped]
import pusher.http  # type: ignore[import-untyped]
import pusher.signature  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.timeouts import TIMEOUT

PUSHER_JS_QUERY: Final = "protocol=7&client=js&version=8.6.0&flash=false"

Frame = dict[str, Any]


def inner(frame: Mapping[str, Any]) -> Any:
    """The JSON-encoded `data` string of a server frame, decoded (asserting it is a string)."""
    data = frame["data"]
    assert isinstance(data, str), f"data is not a JSON-encoded string: {frame!r}"
    return orjson.loads(data)


class Client:
    """One Pusher protocol connection; `socket_id` comes from `pusher:connection_established`."""

    def __init__(self, ws: ClientConnection, socket_id: str = "") -> None:
        self.ws = ws
        self.socket_id = socket_id

    async def send(self, frame: Mapping[str, Any] | str | bytes) -> None:
        if isinstance(frame, Mapping):
            await self.ws.send(orjson.dumps(frame).decode())
        elif isinstance(frame, bytes):
            await self.ws.send(frame)
        else:
            await self.ws.send(frame)

    async def recv_text(self, timeout: float = TIMEOUT) -> str:
        async with asyncio.timeout(timeout):
            message = await self.ws.recv()
        assert isinstance(message, str), f"expected a text frame, got {message!r}"
        return message

    async def recv(self, timeout: float = TIMEOUT) -> Frame:
        frame = orjson.loads(await self.recv_text(timeout))
        assert isinstance(frame, dict)
        return frame

    async def expect(self, event: str, channel: str | None = None) -> Frame:
        """The next frame, which must be `event` (on `channel` when given)."""
        frame = await self.recv()
        assert frame.get("event") == event, f"expected {event}, got {frame!r}"
        if channel is not None:
            assert frame.get("channel") == channel, f"expected channel {channel}, got {frame!r}"
        return frame

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Wait for the server's close; fails if a frame arrives first. Returns (code, reason)."""
        try:
            async with asyncio.timeout(timeout):
                message = await self.ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "connection dropped without a close frame"
            return closed.rcvd.code, closed.rcvd.reason
        raise AssertionError(f"expected the connection to close, got a frame {message!r}")

    async def expect_silence(self) -> None:
        """Prove nothing was queued for this socket: a ping's pong must be the very next frame.

        Frames on one connection are written in order, so anything already sent to this socket
        arrives before the pong.
        """
        await self.send({"event": "pusher:ping", "data": {}})
        frame = await self.recv()
        assert frame == {"event": "pusher:pong", "data": "{}"}, f"expected only the pong, got {frame!r}"

    async def subscribe(self, channel: str, auth: str = "", channel_data: str | None = None) -> None:
        data: dict[str, Any] = {"auth": auth, "channel": channel}
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send({"event": "pusher:subscribe", "data": data})

    async def subscribed(self, channel: str, auth: str = "", channel_data: str | None = None) -> Frame:
        """Subscribe and return the `pusher_internal:subscription_succeeded` frame."""
        await self.subscribe(channel, auth, channel_data)
        return await self.expect("pusher_internal:subscription_succeeded", channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    async def close(self) -> None:
        await self.ws.close()


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any
    content_type: str


class Api:
    """Signed HTTP API calls: requests are built and signed by the official Python SDK, then sent with
    aiohttp so a test sees the exact status and body (the SDK only raises on errors)."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port

    def sdk(self, app_id: str, key: str, secret: str, **options: Any) -> pusher.Pusher:
        return pusher.Pusher(
            app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=self.port, ssl=False, **options
        )

    async def send(self, request: Any) -> ApiResponse:
        """Send a `pusher.http.Request` as the SDK's aiohttp backend does."""
        return await self.raw(request.method, request.path, request.query_params, request.body, request.headers)

    async def raw(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        url = f"http://127.0.0.1:{self.port}{path}"
        async with asyncio.timeout(TIMEOUT):
            async with self.session.request(
                method, url, params=query, data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await response.read()
                content_type = response.content_type
                status = response.status
        parsed: Any = orjson.loads(text) if content_type == "application/json" else text.decode()
        return ApiResponse(status, parsed, content_type)


def build_request(sdk: pusher.Pusher, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
    """An SDK-signed request for any path and params (the SDK JSON-encodes POST params as the body)."""
    return pusher.http.Request(sdk._pusher_client, method, path, dict(params or {}))


def resign(
    request: Any,
    *,
    body: bytes | None = None,
    query: Mapping[str, str] | None = None,
    drop: tuple[str, ...] = (),
    secret: str | None = None,
) -> Any:
    """Change a built request's raw body and/or query params, then sign it again the SDK's way
    (its own string-to-sign and HMAC). `drop` removes params after signing."""
    if body is not None:
        request.body = body
    params = {k: v for k, v in request.query_params.items() if k != "auth_signature"}
    if body is not None:
        import hashlib

        params["body_md5"] = hashlib.md5(body).hexdigest()
    params.update(query or {})
    string_to_sign = "\n".join([request.method, request.path, pusher.http.make_query_string(params)])
    params["auth_signature"] = pusher.signature.sign(secret or request.client.secret, string_to_sign)
    for name in drop:
        params.pop(name, None)
    request.query_params = params
    return request


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    """Poll a state that no frame announces (server-side clean-up after a close), bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("state not reached in time")
        await asyncio.sleep(0.01)


# Connecting ----------------------------------------------------------------------------------------


def ws_url(port: int, key: str, query: str | None = PUSHER_JS_QUERY, path: str = "") -> str:
    """The URL pusher-js opens for app `key` (query None: no query string at all)."""
    suffix = "" if query is None else f"?{query}"
    return f"ws://127.0.0.1:{port}{path}/app/{key}{suffix}"


async def open_socket(url: str, origin: str | None = None, **options: Any) -> Client:
    """A WebSocket to `url` without reading anything yet (socket_id stays empty)."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.typing import Origin

    async with asyncio.timeout(TIMEOUT):
        ws = await ws_connect(
            url, origin=Origin(origin) if origin else None, open_timeout=TIMEOUT, ping_interval=None, **options
        )
    return Client(ws)


async def connect(url: str, origin: str | None = None, **options: Any) -> Client:
    """Open a socket and read `pusher:connection_established`; the Client knows its socket_id."""
    client = await open_socket(url, origin, **options)
    frame = await client.expect("pusher:connection_established")
    client.socket_id = inner(frame)["socket_id"]
    return client


# Auth strings from the official SDK -----------------------------------------------------------------


class RawData(dict[str, Any]):
    """A dict the SDK accepts (it validates `id` for sign-in) but signs as `raw`, verbatim: lets the
    official SDK sign malformed channel_data / user_data for refusal tests."""

    def __init__(self, raw: str, **fields: Any) -> None:
        super().__init__(fields or {"id": "raw"})
        self.raw = raw


class RawJSONEncoder(json.JSONEncoder):
    """The SDK's json_encoder: RawData as its raw string, everything else as json.dumps would."""

    def encode(self, o: Any) -> str:
        if isinstance(o, RawData):
            return o.raw
        return super().encode(o)


def auth_sdk(app_id: str, key: str, secret: str, **options: Any) -> pusher.Pusher:
    """The official SDK as an app's auth endpoint uses it (no HTTP is sent by the auth helpers)."""
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, json_encoder=RawJSONEncoder, **options)


def private_auth(sdk: pusher.Pusher, socket_id: str, channel: str) -> str:
    return str(sdk.authenticate(channel=channel, socket_id=socket_id)["auth"])


def presence_auth(sdk: pusher.Pusher, socket_id: str, channel: str, channel_data: Any) -> tuple[str, str]:
    """(auth, channel_data) as the SDK returns them; `channel_data` a dict or a RawData."""
    reply = sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=channel_data)
    return str(reply["auth"]), str(reply["channel_data"])


def signin_auth(sdk: pusher.Pusher, socket_id: str, user_data: Any) -> tuple[str, str]:
    """(auth, user_data) from the SDK's authenticate_user; `user_data` a dict with `id` or a RawData."""
    reply = sdk.authenticate_user(socket_id, user_data)
    return str(reply["auth"]), str(reply["user_data"])


async def signin(client: Client, auth: str, user_data: str) -> None:
    await client.send({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})

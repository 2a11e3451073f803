"""The signed HTTP API (docs/protocol.md §6): one handler per endpoint plus the signature check.

Errors are 4xx with a JSON body `{"error": "<what is wrong>"}`, raised through `http_error`.

Over 400 lines on purpose: one handler per endpoint, and the request signature checks they all share,
read best in one place; the fast path of the lean transport calls publish_request here so both paths
give the same answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import web

from relay.admission import ApiRateLimit
from relay.apps import AppDirectory
from relay.config import AppConfig
from relay.metrics import NO_APP
from relay.node import Node
from relay.protocol.channels import (
    ChannelKind,
    channel_name_problem,
    channel_type,
    event_name_problem,
    is_cache,
    is_presence,
)
from relay.protocol.ids import is_socket_id
from relay.signing import body_md5, verify_request_signature_any

MAX_CHANNELS_PER_EVENT: Final = 100
MAX_BATCH_SIZE: Final = 10
TIMESTAMP_WINDOW: Final = 600
EVENT_INFO: Final = frozenset({"user_count", "subscription_count"})
CHANNEL_INFO: Final = frozenset({"user_count", "subscription_count", "cache"})
CHANNELS_INFO: Final = frozenset({"user_count", "subscription_count"})
# `{}`, the answer to almost every publish: no encoding per request.
EMPTY_OBJECT: Final = b"{}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A publish's answer to a transport: status, JSON body, and Retry-After seconds for a 429.
PublishAnswer = tuple[int, bytes, int | None]


# Prefix of the route names that count_requests counts (the rest of the name is the endpoint label).
API_ROUTE: Final = "api:"


class ApiError(web.HTTPException):
    """An HTTP API error of any 4xx status with a JSON body `{"error": message}`."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        self.status_code = status
        self.retry_after = retry_after
        body: dict[str, object] = {"error": message}
        headers: dict[str, str] = {}
        if retry_after is not None:
            body["retry_after"] = retry_after  # for clients that read the body but not the header
            headers["Retry-After"] = str(retry_after)
        self.body_bytes = orjson.dumps(body)
        super().__init__(text=self.body_bytes.decode(), content_type="application/json", headers=headers or None)


def http_error(status: int, message: str) -> NoReturn:
    raise ApiError(status, message)


def json_response(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _response(status: int, body: bytes) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def query_params(raw_query: str) -> list[tuple[str, str]]:
    """The query's (name, value) pairs, decoded once; the SDKs' plain queries skip parse_qsl."""
    if "%" in raw_query or "+" in raw_query:
        return parse_qsl(raw_query, keep_blank_values=True)
    params = []
    for pair in raw_query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            params.append((name, value))
    return params


@dataclass(frozen=True, slots=True)
class SignedRequest:
    app: AppConfig
    body: bytes


@dataclass(frozen=True, slots=True)
class EventRequest:
    """One validated event of `POST /events` or of a batch."""

    name: str
    data: str
    channels: tuple[str, ...]
    socket_id: str
    info: frozenset[str]


class HttpApi:
    def __init__(self, node: Node, apps: AppDirectory, path_prefix: str = "") -> None:
        self._rate_limit = ApiRateLimit()
        self._node = node
        self._apps = apps
        self._prefix = path_prefix

    def add_routes(self, router: web.UrlDispatcher) -> None:
        prefix = self._prefix
        # Route names starting with API_ROUTE are counted by count_requests, under the name that follows.
        router.add_post(f"{prefix}/apps/{{app_id}}/events", self.events, name=f"{API_ROUTE}events")
        router.add_post(f"{prefix}/apps/{{app_id}}/batch_events", self.batch_events, name=f"{API_ROUTE}batch_events")
        router.add_get(f"{prefix}/apps/{{app_id}}/channels", self.channels, name=f"{API_ROUTE}channels")
        router.add_get(f"{prefix}/apps/{{app_id}}/channels/{{channel}}", self.channel, name=f"{API_ROUTE}channel")
        router.add_get(f"{prefix}/apps/{{app_id}}/channels/{{channel}}/users", self.users, name=f"{API_ROUTE}users")
        router.add_post(
            f"{prefix}/apps/{{app_id}}/users/{{user_id}}/terminate_connections",
            self.terminate,
            name=f"{API_ROUTE}terminate_connections",
        )
        # pusher-http-python 3.3 posts here without /apps/<id>; the app is found by auth_key (docs/protocol.md §9.16).
        router.add_post(
            f"{prefix}/users/{{user_id}}/terminate_connections",
            self.terminate,
            name=f"{API_ROUTE}terminate_connections.by_key",
        )

    def app_label(self, app_id: str | None) -> str:
        """The app_id metrics label: only configured apps, so a caller cannot grow the label set."""
        return app_id if app_id is not None and self._apps.by_id(app_id) is not None else NO_APP

    def count_request(self, app_id: str | None, endpoint: str, status: int, started: float) -> None:
        self._node.metrics.http_request(self.app_label(app_id), endpoint, status, time.perf_counter() - started)

    @web.middleware
    async def count_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """relay_http_requests_total and the latency histogram for every HTTP API route."""
        name = request.match_info.route.name
        if name is None or not name.startswith(API_ROUTE):
            return await handler(request)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            endpoint = name[len(API_ROUTE) :].partition(".")[0]
            self.count_request(request.match_info.get("app_id"), endpoint, status, started)

    # Signature -----------------------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> SignedRequest:
        """Pusher's request signature, checked as every official SDK signs it (§6.3)."""
        # The raw query: yarl's query_string is decoded already, and decoding twice turns %26 into a separator.
        app, query = self.check_signature(
            request.method, request.raw_path, request.rel_url.raw_query_string, request.match_info.get("app_id")
        )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            http_error(413, "Request body is too large")
        return self.check_body(app, query, body)

    def check_signature(
        self, method: str, raw_target: str, raw_query: str, app_id: str | None
    ) -> tuple[AppConfig, dict[str, str]]:
        """Every check that needs no body: the app, the auth parameters, the timestamp and the signature."""
        params = query_params(raw_query)
        query = dict(params)
        if app_id is not None:
            app = self._apps.by_id(app_id)
            if app is None:
                http_error(404, f"No app with id {app_id!r}")
        else:
            app = self._apps.by_key(query.get("auth_key", ""))
            if app is None:
                http_error(401, "Unknown auth_key")
        for required in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
            if not query.get(required):
                http_error(401, f"Missing {required} query parameter")
        if query["auth_key"] != app.key:
            http_error(401, "auth_key does not belong to this app")
        if query["auth_version"] != "1.0":
            http_error(401, f"Unsupported auth_version {query['auth_version']!r}, expected 1.0")
        try:
            timestamp = int(query["auth_timestamp"])
        except ValueError:
            http_error(401, "auth_timestamp must be Unix seconds")
        now = int(time.time())
        if abs(now - timestamp) >= TIMESTAMP_WINDOW:
            http_error(
                401, f"Timestamp expired: given {timestamp} is not within {TIMESTAMP_WINDOW}s of server time {now}"
            )
        if not self._signature_ok(method, raw_target, app, params, query["auth_signature"]):
            http_error(401, "Invalid signature: expected HMAC SHA256 hex digest of METHOD\\npath\\nsorted query")
        # Counted only once the request is signed: nobody without the secret can spend an app's allowance.
        wait = self._rate_limit.retry_after(app.id, app.api_rate_limit)
        if wait is not None:
            limit = f"{app.api_rate_limit:g}"
            raise ApiError(429, f"Too many requests: this app may make {limit} per second", math.ceil(wait))
        return app, query

    @staticmethod
    def check_body(app: AppConfig, query: Mapping[str, str], body: bytes) -> SignedRequest:
        """The checks that need the body (body_md5), then whether the app is enabled."""
        expected_md5 = query.get("body_md5")
        if body and expected_md5 is None:
            http_error(401, "Missing body_md5 query parameter for a request with a body")
        if expected_md5 is not None and expected_md5 != body_md5(body):
            http_error(401, "body_md5 does not match the request body")
        if not app.enabled:
            http_error(403, "Application is disabled")
        return SignedRequest(app, body)

    def _signature_ok(
        self, method: str, raw_target: str, app: AppConfig, params: list[tuple[str, str]], signature: str
    ) -> bool:
        raw_path = raw_target.split("?", 1)[0]
        candidates = [raw_path]
        if "%" in raw_path:
            candidates.append(unquote(raw_path))
        if self._prefix and raw_path.startswith(self._prefix):
            candidates.append(raw_path[len(self._prefix) :])
        return verify_request_signature_any(app.secret, method, candidates, params, signature)

    # Validation ----------------------------------------------------------------------------------

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            http_error(400, "Request body is not valid JSON")
        if not isinstance(payload, dict):
            http_error(400, "Request body must be a JSON object")
        return payload

    @staticmethod
    def _info(raw: object, allowed: frozenset[str]) -> frozenset[str]:
        if raw is None or raw == "":
            return frozenset()
        if not isinstance(raw, str):
            http_error(400, "info must be a comma-separated string")
        attributes = frozenset(part.strip() for part in raw.split(",") if part.strip())
        unknown = sorted(attributes - allowed)
        if unknown:
            http_error(400, f"Unknown info attribute {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        return attributes

    def _event(self, app: AppConfig, payload: Mapping[str, Any], *, batch: bool, where: str = "") -> EventRequest:
        name = payload.get("name")
        if not isinstance(name, str):
            http_error(400, f"{where}name must be a string")
        problem = event_name_problem(name)
        if problem:
            http_error(400, f"{where}{problem}")
        data = payload.get("data")
        if not isinstance(data, str):
            http_error(400, f"{where}data must be a string (JSON-encode objects before sending)")
        # Only a string that could be over the limit in UTF-8 (up to 4 bytes a character) is encoded.
        if len(data) * 4 > app.max_event_size and len(data.encode()) > app.max_event_size:
            # Pusher's wording: pusher-http-php's acceptance tests match "content of this event".
            limit = app.max_event_size
            http_error(413, f"{where}The content of this event exceeds the allowed maximum ({limit} bytes)")
        channels = self._channels(payload, batch=batch, where=where)
        socket_id = payload.get("socket_id")
        if socket_id is None or socket_id == "":
            socket_id = ""
        elif not isinstance(socket_id, str) or not is_socket_id(socket_id):
            http_error(400, f"{where}socket_id must look like 1234.5678")
        info = self._info(payload.get("info"), EVENT_INFO)
        return EventRequest(name, data, channels, socket_id, info)

    @staticmethod
    def _channels(payload: Mapping[str, Any], *, batch: bool, where: str) -> tuple[str, ...]:
        raw = payload.get("channels")
        if raw is None:
            single = payload.get("channel")
            if not isinstance(single, str):
                http_error(400, f"{where}channel (a string) or channels (a list) is required")
            raw = [single]
        elif batch:
            http_error(400, f"{where}a batch event takes exactly one channel")
        if not isinstance(raw, list) or not all(isinstance(channel, str) for channel in raw):
            http_error(400, f"{where}channels must be a list of strings")
        channels = tuple(dict.fromkeys(raw))
        if not 1 <= len(channels) <= MAX_CHANNELS_PER_EVENT:
            http_error(400, f"{where}an event goes to 1 to {MAX_CHANNELS_PER_EVENT} channels, got {len(channels)}")
        for channel in channels:
            problem = channel_name_problem(channel)
            if problem:
                http_error(400, f"{where}{problem}: {channel[:210]!r}")
        if len(channels) > 1 and any(channel_type(c).kind is ChannelKind.ENCRYPTED for c in channels):
            http_error(400, f"{where}an event to an encrypted channel must go to that channel alone")
        return channels

    # Endpoints -----------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        signed = await self.authenticate(request)
        return _response(*await self._publish_events(signed))

    async def batch_events(self, request: web.Request) -> web.Response:
        signed = await self.authenticate(request)
        return _response(*await self._publish_batch(signed))

    async def publish_request(
        self, method: str, raw_target: str, raw_query: str, app_id: str, body: bytes, *, batch: bool
    ) -> PublishAnswer:
        """`POST /events` (or `/batch_events`) from plain bytes, for transports that parse HTTP themselves.

        The same checks in the same order as the aiohttp handlers, minus the body size (the caller's).
        Returns the status, the JSON body and the Retry-After seconds of a 429 (else None); an error is
        `{"error": ...}` exactly as aiohttp sends it.
        """
        started = time.perf_counter()
        status, answer, retry_after = 500, b'{"error":"Internal server error"}', None
        try:
            app, query = self.check_signature(method, raw_target, raw_query, app_id)
            signed = self.check_body(app, query, body)
            status, answer = await (self._publish_batch(signed) if batch else self._publish_events(signed))
        except ApiError as error:
            status, answer, retry_after = error.status, error.body_bytes, error.retry_after
        finally:
            self.count_request(app_id, "batch_events" if batch else "events", status, started)
        return status, answer, retry_after

    async def _publish_events(self, signed: SignedRequest) -> tuple[int, bytes]:
        event = self._event(signed.app, self._json_object(signed.body), batch=False)
        await self._node.publish(signed.app, event.channels, event.name, event.data, event.socket_id)
        if not event.info:
            return 200, EMPTY_OBJECT
        channels = {
            channel: await self._channel_attributes(signed.app, channel, event.info) for channel in event.channels
        }
        return 200, orjson.dumps({"channels": channels})

    async def _publish_batch(self, signed: SignedRequest) -> tuple[int, bytes]:
        batch = self._json_object(signed.body).get("batch")
        if not isinstance(batch, list) or not all(isinstance(entry, dict) for entry in batch):
            http_error(400, "batch must be a list of event objects")
        if not batch:
            http_error(400, "batch must hold at least one event")
        if len(batch) > MAX_BATCH_SIZE:
            # Pusher's wording: pusher-http-php's acceptance tests match "Batch too large".
            http_error(400, f"Batch too large: at most {MAX_BATCH_SIZE} events, got {len(batch)}")
        # Validate every event before publishing any, so a bad batch publishes nothing.
        events = [self._event(signed.app, entry, batch=True, where=f"batch[{i}]: ") for i, entry in enumerate(batch)]
        for event in events:
            await self._node.publish(signed.app, event.channels, event.name, event.data, event.socket_id)
        if not any(event.info for event in events):
            return 200, EMPTY_OBJECT
        results = [
            await self._channel_attributes(signed.app, event.channels[0], event.info) if event.info else {}
            for event in events
        ]
        return 200, orjson.dumps({"batch": results})

    async def _channel_attributes(self, app: AppConfig, channel: str, info: frozenset[str]) -> dict[str, Any]:
        """Attributes that apply to this channel: user_count only on presence channels."""
        adapter = self._node.adapter
        attributes: dict[str, Any] = {}
        if "user_count" in info and is_presence(channel):
            attributes["user_count"] = await adapter.member_count(app.id, channel)
        if "subscription_count" in info:
            attributes["subscription_count"] = await adapter.subscription_count(app.id, channel)
        return attributes

    async def channels(self, request: web.Request) -> web.Response:
        signed = await self.authenticate(request)
        prefix = request.query.get("filter_by_prefix", "")
        info = self._info(request.query.get("info"), CHANNELS_INFO)
        if "user_count" in info and not prefix.startswith("presence-"):
            http_error(400, "info=user_count needs filter_by_prefix=presence-")
        adapter = self._node.adapter
        occupied = await adapter.channels(signed.app.id, prefix)
        result: dict[str, dict[str, Any]] = {}
        for channel, subscription_count in sorted(occupied.items()):
            attributes: dict[str, Any] = {}
            if "user_count" in info:
                attributes["user_count"] = await adapter.member_count(signed.app.id, channel)
            if "subscription_count" in info:
                attributes["subscription_count"] = subscription_count
            result[channel] = attributes
        return json_response({"channels": result})

    def _channel_name(self, request: web.Request) -> str:
        channel = request.match_info["channel"]
        problem = channel_name_problem(channel)
        if problem:
            http_error(400, f"{problem}: {channel[:210]!r}")
        return channel

    async def channel(self, request: web.Request) -> web.Response:
        signed = await self.authenticate(request)
        channel = self._channel_name(request)
        info = self._info(request.query.get("info"), CHANNEL_INFO)
        if "user_count" in info and not is_presence(channel):
            http_error(400, "info=user_count applies to presence channels only")
        if "cache" in info and not is_cache(channel):
            http_error(400, "info=cache applies to cache channels only")
        adapter = self._node.adapter
        app_id = signed.app.id
        subscription_count = await adapter.subscription_count(app_id, channel)
        result: dict[str, Any] = {"occupied": subscription_count > 0}
        if "user_count" in info:
            result["user_count"] = await adapter.member_count(app_id, channel)
        if "subscription_count" in info:
            result["subscription_count"] = subscription_count
        if "cache" in info:
            cached = await adapter.get_cache(app_id, channel)
            result["cache"] = (
                None
                if cached is None
                else {"event": cached.event, "data": cached.data, "ttl": max(0, int(cached.expires_at - time.time()))}
            )
        return json_response(result)

    async def users(self, request: web.Request) -> web.Response:
        signed = await self.authenticate(request)
        channel = self._channel_name(request)
        if not is_presence(channel):
            http_error(400, "Users can only be listed for presence channels")
        members = await self._node.adapter.members(signed.app.id, channel)
        return json_response({"users": [{"id": user_id} for user_id in members]})

    async def terminate(self, request: web.Request) -> web.Response:
        signed = await self.authenticate(request)
        user_id = request.match_info["user_id"]
        if not user_id or len(user_id) > 128:
            http_error(400, "user_id must be 1 to 128 characters")
        self._node.terminate_user(signed.app, user_id)
        return json_response({})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404/405/413 become JSON bodies like ours; never an error with status 200."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or error.content_type == "application/json":
            raise
        message = error.reason if error.status != 413 else "Request body is too large"
        raise ApiError(error.status, message) from None

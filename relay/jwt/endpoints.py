"""`POST {path}/apps/<id>/auth` and `POST {path}/apps/<id>/user-auth`: drop-in targets for pusher-js
`channelAuthorization.endpoint` / `userAuthentication.endpoint` and Echo's `authEndpoint`.

They read the form fields pusher-js sends (`socket_id`, `channel_name`) and the `Authorization: Bearer`
header (Echo's `bearerToken`, pusher-js `headers`), and answer with CORS headers for the app's
`allowed_origins`, preflight included. Errors: `{"error": why, "check": name}` with 400, 401, 403 or 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from relay.apps import AppDirectory
from relay.config import AppConfig
from relay.http_api import API_ROUTE
from relay.jwt.answers import BAD_REQUEST, channel_answer, user_answer
from relay.jwt.authority import TokenAuthority
from relay.jwt.rejection import FORBIDDEN, UNAUTHORIZED, TokenRejected
from relay.jwt.verifier import TokenClaims
from relay.protocol.ids import is_socket_id
from relay.transport.handshake import origin_allowed

# Browsers may cache a preflight answer this long (seconds).
PREFLIGHT_MAX_AGE: Final = "600"
NOT_FOUND: Final = 404


class JwtAuthEndpoints:
    def __init__(self, apps: AppDirectory, authority: TokenAuthority, path_prefix: str = "") -> None:
        self._apps = apps
        self._authority = authority
        self._prefix = path_prefix

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for name, handler in (("auth", self.channel_auth), ("user-auth", self.user_auth)):
            path = f"{self._prefix}/apps/{{app_id}}/{name}"
            # Named like the HTTP API's routes: counted in relay_http_requests_total with their latency.
            router.add_post(path, handler, name=f"{API_ROUTE}{name.replace('-', '_')}")
            router.add_route("OPTIONS", path, self.preflight)

    async def channel_auth(self, request: web.Request) -> web.Response:
        return await self._answer(request, "channel")

    async def user_auth(self, request: web.Request) -> web.Response:
        return await self._answer(request, "user")

    async def _answer(self, request: web.Request, kind: Literal["channel", "user"]) -> web.Response:
        app, cors = self._app_and_cors(request)
        socket_id = channel = ""
        try:
            fields = await _fields(request)
            socket_id = fields.get("socket_id", "")
            channel = fields.get("channel_name", "") if kind == "channel" else ""
            if not is_socket_id(socket_id):
                raise TokenRejected("invalid_socket_id", "socket_id is missing or not a socket id", BAD_REQUEST)
            if kind == "channel" and not channel:
                raise TokenRejected("invalid_channel", "channel_name is missing", BAD_REQUEST)
            claims = await self._authority.claims(app, _bearer_token(request))
            body = _body(app, claims, socket_id, channel)
        except TokenRejected as rejection:
            # repr: socket_id and channel_name come from the request, a log line must stay one line.
            where = f"{kind}-auth socket_id={socket_id[:32]!r}" + (f" channel={channel[:200]!r}" if channel else "")
            self._authority.refused(app, rejection, where)
            return _error(rejection, cors)
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=cors)

    async def preflight(self, request: web.Request) -> web.Response:
        _, cors = self._app_and_cors(request)
        if not request.headers.get("Origin"):
            raise _Refused(TokenRejected("not_a_preflight", "A CORS preflight needs an Origin header", BAD_REQUEST))
        requested = request.headers.get("Access-Control-Request-Headers", "")
        headers = {
            **cors,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            # Echo adds X-CSRF-TOKEN and X-Socket-ID next to Authorization: whatever the page asks for.
            "Access-Control-Allow-Headers": requested[:1000] or "Authorization, Content-Type",
        }
        return web.Response(status=204, headers=headers)

    def _app_and_cors(self, request: web.Request) -> tuple[AppConfig, dict[str, str]]:
        """The app with JWT settings, and the CORS headers for the request's Origin; 404 or 403 otherwise."""
        app = self._apps.by_id(request.match_info["app_id"])
        if app is None or app.jwt is None or not app.enabled:
            why = "Unknown app" if app is None else "JWT authorisation is not configured for this app"
            raise _Refused(TokenRejected("jwt_not_configured", why, NOT_FOUND))
        origin = request.headers.get("Origin", "")
        if not origin:
            return app, {}
        if not origin_allowed(origin, app.allowed_origins):
            raise _Refused(TokenRejected("origin_not_allowed", "Origin not allowed", FORBIDDEN))
        return app, {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _body(app: AppConfig, claims: TokenClaims, socket_id: str, channel: str) -> dict[str, str]:
    if channel:
        return channel_answer(app, claims, socket_id, channel)
    return user_answer(app, claims, socket_id)


async def _fields(request: web.Request) -> Mapping[str, str]:
    """pusher-js posts a url-encoded form; a JSON object with the same names is read too."""
    if request.content_type == "application/json":
        try:
            parsed: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise TokenRejected("invalid_body", "The body is not valid JSON", BAD_REQUEST) from None
        if not isinstance(parsed, dict):
            raise TokenRejected("invalid_body", "The body must be a JSON object", BAD_REQUEST)
        return {name: value for name, value in parsed.items() if isinstance(value, str)}
    form = await request.post()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("missing_token", "An Authorization: Bearer <token> header is required")
    return token.strip()


def _error(rejection: TokenRejected, cors: Mapping[str, str]) -> web.Response:
    headers = dict(cors)
    if rejection.status == UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    body = orjson.dumps({"error": rejection.message, "check": rejection.check})
    return web.Response(body=body, status=rejection.status, content_type="application/json", headers=headers)


class _Refused(web.HTTPException):
    """A refusal before CORS headers can be chosen (unknown app, origin not allowed)."""

    def __init__(self, rejection: TokenRejected) -> None:
        self.status_code = rejection.status
        body = orjson.dumps({"error": rejection.message, "check": rejection.check})
        super().__init__(text=body.decode(), content_type="application/json")

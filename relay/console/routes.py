"""The console's HTTP side: `{path}/console` (page or login form), its stream, its apps and its test events.

Off unless a console token is configured. Every route but the stylesheet needs the token; every route
refuses plain HTTP from another machine unless `console_allow_insecure` is set. An address that sent a
few wrong tokens gets 429 with Retry-After until it earns another try (auth.LoginThrottle).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any, Final

import orjson
from aiohttp import web

from relay.admission import parse_networks
from relay.apps import AppDirectory
from relay.config import Config
from relay.console.auth import COOKIE, ConsoleAuth, LoginThrottle, is_loopback
from relay.console.service import Console
from relay.node import Node
from relay.protocol.channels import channel_name_problem, event_name_problem

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_INTERVAL: Final = 1.0
# Log lines are gathered this long after the first one, then written in one stream message.
BATCH_DELAY: Final = 0.1
STATIC_TYPES: Final = {"console.css": "text/css", "console.js": "text/javascript", "favicon.svg": "image/svg+xml"}
# Page headers: nothing from elsewhere, not framed, not cached.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _static(name: str) -> bytes:
    return resources.files("relay.console").joinpath("static", name).read_bytes()


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _sse(event: str, payload: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ConsoleRoutes:
    def __init__(self, console: Console, apps: AppDirectory, auth: ConsoleAuth, prefix: str) -> None:
        self._console = console
        self._apps = apps
        self._auth = auth
        self._throttle = LoginThrottle()
        self._base = f"{prefix}/console"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        base = self._base
        router.add_get(base, self._guarded(self.page, login=True))
        router.add_post(f"{base}/login", self._guarded(self.login, public=True))
        router.add_post(f"{base}/logout", self._guarded(self.logout, public=True))
        router.add_get(f"{base}/static/console.css", self._guarded(self.static, public=True))
        router.add_get(f"{base}/static/favicon.svg", self._guarded(self.static, public=True))
        router.add_get(f"{base}/static/console.js", self._guarded(self.static))
        router.add_get(f"{base}/apps", self._guarded(self.apps))
        router.add_get(f"{base}/stream", self._guarded(self.stream))
        router.add_post(f"{base}/events", self._guarded(self.test_event))

    def _guarded(self, handler: Handler, *, public: bool = False, login: bool = False) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            problem = self._auth.insecure_problem(request)
            if problem:
                logger.warning("console: %s", problem)
                return _json({"error": problem}, 403)
            if public:
                return await handler(request)
            client = self._auth.client(request)
            wait = self._throttle.wait(client)
            if wait > 0:
                return self._too_many(wait, login)
            if self._auth.is_authorized(request):
                return await handler(request)
            if self._auth.presents_credentials(request):
                self._throttle.failed(client)
                logger.warning("console: wrong token from %s", client)
            if login:
                return self._login_page(401)
            return _json({"error": "The console needs its token (Authorization: Bearer, or log in)"}, 401)

        return guarded

    # Pages ---------------------------------------------------------------------------------------

    def _login_page(self, status: int, message: str = "") -> web.Response:
        html = _static("login.html").decode().replace("{{base}}", self._base)
        html = html.replace("{{message}}", message)
        return web.Response(text=html, status=status, content_type="text/html", headers=PAGE_HEADERS)

    async def page(self, request: web.Request) -> web.Response:
        html = _static("console.html").decode().replace("{{base}}", self._base)
        response = web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)
        # Opened with a Bearer header: the browser's EventSource cannot send one, the cookie goes instead.
        self._auth.login_cookie(response, self._base, secure=request.secure)
        return response

    async def static(self, request: web.Request) -> web.Response:
        name = request.path.rpartition("/")[2]
        return web.Response(body=_static(name), content_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"})

    def _too_many(self, wait: float, page: bool) -> web.Response:
        seconds = max(1, math.ceil(wait))
        headers = {"Retry-After": str(seconds)}
        message = f"Too many wrong console tokens from this address; try again in {seconds} s."
        if page:
            response = self._login_page(429, f'<p class="error" role="alert">{message}</p>')
            response.headers.update(headers)
            return response
        return web.Response(
            body=orjson.dumps({"error": message}), status=429, content_type="application/json", headers=headers
        )

    async def login(self, request: web.Request) -> web.Response:
        client = self._auth.client(request)
        wait = self._throttle.wait(client)
        if wait > 0:
            return self._too_many(wait, page=True)
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not self._auth.is_token(token):
            self._throttle.failed(client)
            logger.warning("console: failed login from %s", client)
            return self._login_page(401, '<p class="error" role="alert">That is not the console token.</p>')
        response = web.HTTPSeeOther(self._base)
        self._auth.login_cookie(response, self._base, secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther(self._base)
        response.del_cookie(COOKIE, path=self._base)
        return response

    # Data ----------------------------------------------------------------------------------------

    async def apps(self, request: web.Request) -> web.Response:
        return _json({"apps": [{"id": app.id, "enabled": app.enabled} for app in self._apps]})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `log` (a list of log lines) as they happen, `status` once a second."""
        app = self._apps.by_id(request.query.get("app_id", ""))
        if app is None:
            return _json({"error": "Unknown app_id"}, 404)
        node = self._console.node
        if not node.accepting:
            return _json({"error": "The server is shutting down"}, 503)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        page, dropped_before = self._console.open_page(app.id)
        loop = asyncio.get_running_loop()
        next_status = loop.time()
        try:
            # Ends when shutdown begins, so an open console never holds the drain up.
            while node.accepting:
                await page.wait(max(0.0, next_status - loop.time()))
                if page.pending:
                    await asyncio.sleep(BATCH_DELAY)
                    await response.write(_sse("log", [event.as_json() for event in page.take()]))
                if loop.time() >= next_status:
                    next_status = loop.time() + STATUS_INTERVAL
                    await response.write(_sse("status", await self._console.status(page, dropped_before)))
        except (ConnectionError, RuntimeError):
            pass  # the browser went away (aiohttp raises ClientConnectionResetError, a ConnectionError)
        finally:
            self._console.pages.close(page)
        return response

    async def test_event(self, request: web.Request) -> web.Response:
        """The page's "send a test event" form, through the node's publish like `POST /apps/<id>/events`."""
        if request.content_type != "application/json":
            # Also keeps other sites' forms out: they cannot post JSON without a CORS preflight.
            return _json({"error": "Send the test event as application/json"}, 415)
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": "The body is not valid JSON"}, 400)
        if not isinstance(payload, dict):
            return _json({"error": "The body must be a JSON object"}, 400)
        app = self._apps.by_id(str(payload.get("app_id", "")))
        if app is None:
            return _json({"error": "Unknown app_id"}, 404)
        channel, event, data = (payload.get(name) for name in ("channel", "event", "data"))
        if not isinstance(channel, str) or not isinstance(event, str) or not isinstance(data, str):
            return _json({"error": "channel, event and data must be strings"}, 400)
        problem = channel_name_problem(channel) or event_name_problem(event)
        if problem:
            return _json({"error": problem}, 400)
        if len(data.encode()) > app.max_event_size:
            return _json(
                {"error": f"The content of this event exceeds the allowed maximum ({app.max_event_size} bytes)"}, 413
            )
        await self._console.node.publish(app, (channel,), event, data)
        return _json({"ok": True})


def add_console(app: web.Application, console_node: Node, apps: AppDirectory, config: Config) -> None:
    """The console's routes and lifecycle, when a console token is configured; nothing otherwise."""
    if not config.console_token:
        return
    console = Console(console_node, config)
    auth = ConsoleAuth(config.console_token, config.console_allow_insecure, parse_networks(config.trusted_proxies))
    ConsoleRoutes(console, apps, auth, config.path).add_routes(app.router)
    if not config.console_allow_insecure and not is_loopback(config.host):
        logger.warning(
            "console: %s/console answers plain HTTP from this machine only; put TLS in front of relay "
            "(or set console_allow_insecure = true on a trusted network)",
            config.path,
        )

    async def console_lifecycle(_: web.Application) -> AsyncIterator[None]:
        await console.start()
        yield
        await console.close()

    app.cleanup_ctx.append(console_lifecycle)

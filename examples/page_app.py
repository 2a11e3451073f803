"""The part every example backend shares: an aiohttp app with SQLite (demo users plus the
example's own schema), its page and static files, the client libraries, and `/up`, `/config`,
`/login` and `/broadcasting/auth` (the example decides who may join which channel)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from aiohttp import web

from .accounts import Tokens, User, json_error, read_login, request_user, seed_users
from .relay_link import RelaySettings, add_vendor_routes, read_channel_auth_form

# Scripts every example page may load, at /shared/.
SHARED_STATIC = Path(__file__).resolve().parent / "static"

DB = web.AppKey("db", sqlite3.Connection)
TOKENS = web.AppKey("tokens", Tokens)
RELAY = web.AppKey("relay", RelaySettings)

# (user, channel) -> custom_data for the SDK's authenticate() (None for private channels);
# raises a 403 through json_error when the user may not subscribe.
ChannelPolicy = Callable[[User, str], "Mapping[str, object] | None"]


def current_user(request: web.Request, cookie: str = "") -> User:
    return request_user(request, request.app[DB], request.app[TOKENS], cookie)


def open_db(path: str, demo_users: Iterable[tuple[str, bool, int]], schema: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    seed_users(db, demo_users)
    db.executescript(schema)
    return db


def create_page_app(
    *,
    static: Path,
    db_path: str,
    demo_users: Iterable[tuple[str, bool, int]],
    schema: str,
    channel_policy: ChannelPolicy,
    page_config: Mapping[str, object] | None = None,
    auth_cookie: str = "",
    relay: RelaySettings | None = None,
) -> web.Application:
    """The shared app; the example adds its own routes. `auth_cookie` also accepts the JWT from
    that cookie (as a Laravel session cookie would be sent), besides the bearer header. `relay`
    defaults to RelaySettings.from_env()."""
    app = web.Application()
    app[DB] = open_db(db_path, demo_users, schema)
    app[TOKENS] = Tokens.from_env()
    app[RELAY] = relay if relay is not None else RelaySettings.from_env()
    extra = dict(page_config or {})

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html")

    async def config(request: web.Request) -> web.Response:
        return web.json_response({**app[RELAY].page_config(), **extra})

    async def login(request: web.Request) -> web.Response:
        user = await read_login(request, app[DB])
        token = app[TOKENS].issue(user)
        response = web.json_response({"token": token, "user": user.as_json()})
        if auth_cookie:
            response.set_cookie(auth_cookie, token, httponly=True, samesite="Strict")
        return response

    async def authorize_channel(request: web.Request) -> web.Response:
        user = current_user(request, auth_cookie)
        socket_id, channel = await read_channel_auth_form(request)
        custom_data = channel_policy(user, channel)
        return web.json_response(app[RELAY].client().authenticate(channel, socket_id, custom_data))

    async def up(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def close_db(app: web.Application) -> None:
        app[DB].close()

    app.router.add_get("/", index)
    app.router.add_static("/static", static)
    app.router.add_static("/shared", SHARED_STATIC)
    add_vendor_routes(app)
    app.router.add_get("/up", up)
    app.router.add_get("/config", config)
    app.router.add_post("/login", login)
    app.router.add_post("/broadcasting/auth", authorize_channel)
    app.on_cleanup.append(close_db)
    return app


def refuse(user: User, channel: str) -> web.HTTPException:
    return json_error(403, f"{user.name} may not subscribe to {channel}")

"""Laravel Echo example: a tiny static server for the page and resources/js (with Vite's one job
done here: `import.meta.env` becomes the VITE_* values of .env), a session-cookie login, and
Laravel's `/broadcasting/auth` for `private-commerce.<tenant>` and `presence-room.<id>`.
Run it with ./start (relay and this server together).

    PORT=8000 python -m examples.echo.server
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from examples.accounts import User
from examples.page_app import RELAY, create_page_app, current_user, refuse
from examples.relay_link import Publisher, RelaySettings

HERE = Path(__file__).resolve().parent
PUBLIC = HERE / "public"
SCRIPTS = HERE / "resources" / "js"
SESSION_COOKIE = "session"
DEMO_USERS = [("alice", False, 1), ("bob", False, 2)]
_TENANT_CHANNEL = re.compile(r"private-commerce\.(\d+)")
_ROOM_CHANNEL = re.compile(r"presence-room\.\d+")
_SCRIPT_NAME = re.compile(r"[a-z_-]+\.js")

ENV = web.AppKey("env", dict[str, str])
PUBLISHER = web.AppKey("publisher", Publisher)


def read_dotenv(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """KEY=value lines with optional quotes and ${VAR} references, as Laravel reads .env; a
    variable already in `environ` wins over the file."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = (part.strip() for part in line.split("=", 1))
        raw = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" else raw
        values[key] = environ.get(key) or re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], ""), raw)
    return values


def relay_settings(env: Mapping[str, str]) -> RelaySettings:
    """The server side uses REVERB_*, the page VITE_REVERB_*, as in a Laravel app."""
    return RelaySettings(
        app_id=env["REVERB_APP_ID"],
        key=env["REVERB_APP_KEY"],
        secret=env["REVERB_APP_SECRET"],
        host=env["REVERB_HOST"],
        port=int(env["REVERB_PORT"]),
        ws_host=env["VITE_REVERB_HOST"],
        ws_port=int(env["VITE_REVERB_PORT"]),
    )


def channel_policy(user: User, channel: str) -> dict[str, object] | None:
    """routes/channels.php: a tenant's members get its commerce channel; anyone joins a room."""
    tenant = _TENANT_CHANNEL.fullmatch(channel)
    if tenant is not None and int(tenant[1]) == user.tenant_id:
        return None
    if _ROOM_CHANNEL.fullmatch(channel):
        return {"user_id": str(user.id), "user_info": {"id": user.id, "name": user.name}}
    raise refuse(user, channel)


async def script(request: web.Request) -> web.Response:
    """resources/js/<name>.js with `import.meta.env` replaced by the VITE_* values, as Vite does."""
    name = request.match_info["name"]
    path = SCRIPTS / name
    if not _SCRIPT_NAME.fullmatch(name) or not path.is_file():
        raise web.HTTPNotFound(text=json.dumps({"error": f"no script {name}"}), content_type="application/json")
    env = {k: v for k, v in request.app[ENV].items() if k.startswith("VITE_")}
    source = path.read_text().replace("import.meta.env", json.dumps(env))
    return web.Response(text=source, content_type="text/javascript")


async def me(request: web.Request) -> web.Response:
    return web.json_response({"user": current_user(request, SESSION_COOKIE).as_json()})


async def ship_order(request: web.Request) -> web.Response:
    """Broadcast App\\Events\\OrderShipped on the public `orders` channel, as Laravel names it."""
    current_user(request, SESSION_COOKIE)
    order = {"id": int(time.time() * 1000) % 100_000, "city": "Lisbon"}
    await request.app[PUBLISHER].trigger_batch(
        [{"channel": "orders", "name": "App\\Events\\OrderShipped", "data": {"order": order}}]
    )
    return web.json_response({"order": order}, status=201)


async def notify_tenant(request: web.Request) -> web.Response:
    """`.notification.created` on the caller's tenant channel, private-commerce.<tenant>."""
    user = current_user(request, SESSION_COOKIE)
    channel = f"private-commerce.{user.tenant_id}"
    message = f"Tenant {user.tenant_id}: {user.name} sent a notification"
    await request.app[PUBLISHER].trigger_batch(
        [{"channel": channel, "name": "notification.created", "data": {"message": message}}]
    )
    return web.json_response({"channel": channel, "message": message}, status=201)


def create_app(db_path: str, env: Mapping[str, str]) -> web.Application:
    relay = relay_settings(env)
    app = create_page_app(
        static=PUBLIC,
        db_path=db_path,
        demo_users=DEMO_USERS,
        schema="",
        channel_policy=channel_policy,
        auth_cookie=SESSION_COOKIE,
        relay=relay,
    )
    app[ENV] = dict(env)
    app[PUBLISHER] = Publisher(app[RELAY].client())
    app.router.add_get("/resources/js/{name}", script)
    app.router.add_get("/api/me", me)
    app.router.add_post("/demo/orders/ship", ship_order)
    app.router.add_post("/demo/notify", notify_tenant)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(os.environ.get("PORT", "8000"))
    env = read_dotenv(HERE / ".env", os.environ)
    web.run_app(create_app(os.environ.get("DATABASE", "echo.db"), env), host="127.0.0.1", port=port)

"""create_app(config) → web.Application: the wiring of node, adapter, transport and HTTP API.

Usable in-process: a Python app or a test suite can embed relay with `create_app` and an aiohttp runner.
`relay serve` goes through relay.server.create_server, which also puts the lean listener in front of it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from relay.adapters.base import Adapter
from relay.adapters.local import LocalAdapter
from relay.admission import ConnectionAdmission
from relay.alerts import Alerts
from relay.apps import AppDirectory
from relay.config import AppConfig, Config
from relay.console.routes import add_console
from relay.http_api import HttpApi, json_errors
from relay.jwt.authority import TokenAuthority
from relay.jwt.connect import ConnectSignIn
from relay.jwt.endpoints import JwtAuthEndpoints
from relay.metrics import Metrics
from relay.metrics_share import WorkerShare
from relay.node import Node
from relay.transport import WebSocketEndpoint
from relay.webhook_api import WebhookApi
from relay.webhooks import WebhookDispatcher, create_dispatcher

if TYPE_CHECKING:  # only deployments with Redis import redis-py
    from relay.redis.heartbeat import Heartbeat

logger = logging.getLogger(__name__)

NODE_KEY = web.AppKey("relay.node", Node)
CONFIG_KEY = web.AppKey("relay.config", Config)
WEBHOOKS_KEY = web.AppKey("relay.webhooks", WebhookDispatcher)


@dataclass(frozen=True, slots=True)
class RelayApp:
    """The aiohttp application and the parts a transport in front of it serves directly."""

    app: web.Application
    node: Node
    http_api: HttpApi


def make_adapter(config: Config, heartbeat: Heartbeat | None = None) -> Adapter:
    if config.redis is None:
        return LocalAdapter()
    from relay.redis.adapter import RedisAdapter  # only deployments with Redis import redis-py

    return RedisAdapter(config.redis, heartbeat=heartbeat)


def create_app(config: Config, adapter: Adapter | None = None) -> web.Application:
    return build_app(config, adapter).app


def build_app(config: Config, adapter: Adapter | None = None) -> RelayApp:
    apps = AppDirectory(config.apps)
    metrics = Metrics()
    source = f"{socket.gethostname()}:{config.port}"
    metrics.alerts = Alerts(config.alerts.urls, config.alerts.min_interval, source=source)
    # Under --workers the parent names a directory where the workers share their figures.
    share = WorkerShare(Path(config.metrics_dir), metrics) if config.metrics_dir else None
    metrics.share = share
    # With Redis, one node identity and one heartbeat serve the adapter and the webhook store.
    heartbeat: Heartbeat | None = None
    if config.redis is not None:
        from relay.redis.heartbeat import Heartbeat

        heartbeat = Heartbeat(config.redis)
    webhooks = create_dispatcher(config, apps, metrics, heartbeat=heartbeat)
    adapter = adapter or make_adapter(config, heartbeat)
    tokens = TokenAuthority(apps, metrics)
    admission = ConnectionAdmission(config.connect_rate_per_node, config.connect_rate_per_ip, config.trusted_proxies)
    node = Node(apps, adapter, metrics, webhooks=webhooks, connect_hook=ConnectSignIn(tokens), admission=admission)
    register_metrics = getattr(adapter, "register_metrics", None)  # the Redis adapter's outage and queue figures
    if callable(register_metrics):
        register_metrics(metrics)
    http_api = HttpApi(node, apps, config.path)

    app = web.Application(middlewares=[http_api.count_requests, json_errors], client_max_size=config.max_request_size)
    app[NODE_KEY] = node
    app[CONFIG_KEY] = config
    app[WEBHOOKS_KEY] = webhooks

    async def up(request: web.Request) -> web.Response:
        return web.Response(body=b'{"health":"OK"}', content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        # Turns false as soon as shutdown starts, so a load balancer stops sending new clients here.
        status = 200 if node.accepting else 503
        return web.Response(
            body=orjson.dumps({"ready": node.accepting}), status=status, content_type="application/json"
        )

    async def metrics_endpoint(request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    prefix = config.path
    endpoint = WebSocketEndpoint(node, apps, config.max_outbound_buffer)
    app.router.add_get(f"{prefix}/app/{{key}}", endpoint.handle)
    app.router.add_get("/up", up)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    http_api.add_routes(app.router)
    WebhookApi(http_api, webhooks, prefix).add_routes(app.router)
    JwtAuthEndpoints(apps, tokens, prefix).add_routes(app.router)
    add_console(app, node, apps, config)
    # Any other path: a WebSocket upgrade gets close code 4005, plain HTTP a JSON 404.
    app.router.add_get("/{tail:.*}", endpoint.wrong_path)

    async def node_lifecycle(_: web.Application) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop()

    async def observability_lifecycle(_: web.Application) -> AsyncIterator[None]:
        metrics.alerts.start()
        if share is not None:
            share.start()
        yield
        if share is not None:
            await share.close()
        await metrics.alerts.close()  # last: the alerts of a stop (Redis lost on the way out) still go out

    async def close_connections(_: web.Application) -> None:
        # Before aiohttp waits for handlers: WebSocket handlers only return once their socket closes.
        node.close_connections()

    async def webhooks_lifecycle(_: web.Application) -> AsyncIterator[None]:
        await webhooks.start()
        yield
        await webhooks.close()  # after node.stop(): the leaves of the last disconnects are flushed too

    # Contexts exit in reverse order: webhooks start before the node and close after it.
    app.cleanup_ctx.append(observability_lifecycle)
    app.cleanup_ctx.append(webhooks_lifecycle)
    app.cleanup_ctx.append(node_lifecycle)
    app.on_cleanup.append(lambda _: tokens.close())
    app.on_shutdown.append(close_connections)
    return RelayApp(app, node, http_api)


async def reload_apps(app: web.Application, apps: tuple[AppConfig, ...]) -> str:
    """Swap in a new apps configuration (SIGHUP) everywhere it is held; returns what changed, for the log."""
    node = app[NODE_KEY]
    before = {existing.id: existing for existing in node.apps}
    node.reload_apps(apps)
    await app[WEBHOOKS_KEY].reload_apps(apps)
    after = {new.id: new for new in apps}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(app_id for app_id in after.keys() & before.keys() if after[app_id] != before[app_id])
    return f"{len(after)} apps; added {added or 'none'}, removed {removed or 'none'}, changed {changed or 'none'}"

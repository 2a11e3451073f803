"""Configuration sources and the `relay serve` command: TOML, REVERB_* and RELAY_* variables, precedence,
invalid settings (exit code 2, one line naming the field), the development app banner, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.config import DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET, ConfigError, load_config
from relay.protocol import errors
from tests.integration.wire import Api, build_request, connect, inner, open_socket, wait_until, ws_url
from tests.support.fixtures import RelayFactory
from tests.support.relay import http_status, to_toml
from tests.support.timeouts import TIMEOUT

FULL_TOML = """
host = "127.0.0.1"
port = 7001

[[apps]]
id = "1001"
key = "key-one"
secret = "secret-one"
enable_client_events = false
max_connections = 2
max_message_size = 2048
activity_timeout = 17
allowed_origins = ["https://app.example.com", "*.example.org"]

[[apps.webhooks]]
url = "http://127.0.0.1:9/hooks"
event_types = ["channel_occupied", "member_added"]

[[apps]]
id = 1002
key = "key-two"
secret = "secret-two"
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without relay settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "REVERB_"))}
    env.update(extra)
    return env


def run_relay(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Sources, in-process (load_config is what `relay serve` calls) ------------------------------------


def test_toml_required_names(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(FULL_TOML)
    config = load_config(str(path), env={})
    assert (config.host, config.port, config.dev_app) == ("127.0.0.1", 7001, False)
    one, two = config.apps
    assert (one.id, one.key, one.secret) == ("1001", "key-one", "secret-one")
    assert one.enable_client_events is False
    assert (one.max_connections, one.max_message_size, one.activity_timeout) == (2, 2048, 17)
    assert one.allowed_origins == ("https://app.example.com", "*.example.org")
    assert len(one.webhooks) == 1
    assert one.webhooks[0].url == "http://127.0.0.1:9/hooks"
    assert one.webhooks[0].event_types == ("channel_occupied", "member_added")
    assert (two.id, two.key, two.secret, two.webhooks) == ("1002", "key-two", "secret-two", ())
    assert two.enable_client_events is True  # defaults apply to what a table leaves out


def test_reverb_variables() -> None:
    env = {
        "REVERB_SERVER_HOST": "127.0.0.2",
        "REVERB_SERVER_PORT": "7002",
        "REVERB_SERVER_PATH": "/reverb",
        "REVERB_APP_ID": "42",
        "REVERB_APP_KEY": "reverb-key",
        "REVERB_APP_SECRET": "reverb-secret",
        "REVERB_APP_ACTIVITY_TIMEOUT": "45",
        "REVERB_APP_MAX_CONNECTIONS": "10",
        "REVERB_APP_MAX_MESSAGE_SIZE": "5000",
        "REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM": "none",
    }
    config = load_config(env=env)
    assert (config.host, config.port, config.path, config.dev_app) == ("127.0.0.2", 7002, "/reverb", False)
    (app,) = config.apps
    assert (app.id, app.key, app.secret) == ("42", "reverb-key", "reverb-secret")
    assert (app.activity_timeout, app.max_connections, app.max_message_size) == (45, 10, 5000)
    assert app.enable_client_events is False
    env["REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM"] = "members"
    assert load_config(env=env).apps[0].enable_client_events is True


def test_relay_variables() -> None:
    env = {
        "RELAY_HOST": "127.0.0.3",
        "RELAY_PORT": "7003",
        "RELAY_APP_ID": "43",
        "RELAY_APP_KEY": "relay-env-key",
        "RELAY_APP_SECRET": "relay-env-secret",
        "RELAY_APP_ENABLE_CLIENT_EVENTS": "false",
        "RELAY_APP_ALLOWED_ORIGINS": "https://a.test, *.b.test",
        "RELAY_APP_ACTIVITY_TIMEOUT": "12",
        "RELAY_APP_PONG_TIMEOUT": "2.5",
        "RELAY_WEBHOOK_URL": "https://hooks.test/pusher",
        "RELAY_WEBHOOK_EVENT_TYPES": "channel_vacated,client_event",
    }
    config = load_config(env=env)
    assert (config.host, config.port) == ("127.0.0.3", 7003)
    (app,) = config.apps
    assert (app.id, app.key, app.secret) == ("43", "relay-env-key", "relay-env-secret")
    assert app.enable_client_events is False
    assert app.allowed_origins == ("https://a.test", "*.b.test")
    assert (app.activity_timeout, app.pong_timeout) == (12, 2.5)
    assert app.webhooks[0].url == "https://hooks.test/pusher"
    assert app.webhooks[0].event_types == ("channel_vacated", "client_event")


def test_precedence_toml_then_reverb_then_relay_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('port = 7001\nhost = "127.0.0.1"\n')
    assert load_config(str(path), env={}).port == 7001
    env = {"REVERB_SERVER_PORT": "7002"}
    assert load_config(str(path), env=env).port == 7002
    env["RELAY_PORT"] = "7003"
    assert load_config(str(path), env=env).port == 7003
    assert load_config(str(path), env=env, overrides={"port": 7004}).port == 7004
    assert load_config(str(path), env=env, overrides={"port": None}).port == 7003  # an unset flag changes nothing
    assert load_config(str(path), env=env).host == "127.0.0.1"  # untouched settings keep the file's value


def test_relay_app_variables_override_reverb_ones() -> None:
    env = {
        "REVERB_APP_ID": "42",
        "REVERB_APP_KEY": "reverb-key",
        "REVERB_APP_SECRET": "reverb-secret",
        "REVERB_APP_ACTIVITY_TIMEOUT": "45",
        "RELAY_APP_ACTIVITY_TIMEOUT": "9",
        "RELAY_APP_KEY": "relay-key-wins",
    }
    (app,) = load_config(env=env).apps
    assert (app.id, app.key, app.activity_timeout) == ("42", "relay-key-wins", 9)


def test_toml_apps_and_environment_app_together(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(FULL_TOML)
    env = {"REVERB_APP_ID": "44", "REVERB_APP_KEY": "env-key", "REVERB_APP_SECRET": "env-secret"}
    assert [app.id for app in load_config(str(path), env=env).apps] == ["1001", "1002", "44"]


def test_no_configuration_gives_the_development_app() -> None:
    config = load_config(env={})
    assert config.dev_app is True
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    (app,) = config.apps
    assert (app.id, app.key, app.secret) == (DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET)
    assert app.id.isdigit()  # the Python SDK refuses other ids


# Invalid configuration: `relay serve` exits 2 with one line naming the field ---------------------


def one_app(**fields: Any) -> dict[str, Any]:
    return {"apps": [{"id": "1", "key": "k", "secret": "s", **fields}]}


TWO_APPS_ONE_KEY = {"apps": [{"id": "1", "key": "k", "secret": "s"}, {"id": "2", "key": "k", "secret": "t"}]}
BAD_EVENT_TYPE = one_app(webhooks=[{"url": "http://x", "event_types": ["channel_exploded"]}])

INVALID: list[tuple[str, dict[str, Any] | str, dict[str, str], str]] = [
    ("not-integer", one_app(max_connections="lots"), {}, "apps[0].max_connections"),
    ("unknown-name", one_app(colour="red"), {}, "apps[0].colour"),
    ("missing-secret", {"apps": [{"id": "1", "key": "k"}]}, {}, "apps[0].secret"),
    ("empty-key", one_app(key=""), {}, "apps[0].key"),
    ("duplicate-key", TWO_APPS_ONE_KEY, {}, "apps[1].key"),
    ("activity-timeout-zero", one_app(activity_timeout=0), {}, "apps[0].activity_timeout"),
    ("bool-as-string", one_app(enable_client_events="maybe"), {}, "apps[0].enable_client_events"),
    ("webhook-url", one_app(webhooks=[{"url": "ftp://x"}]), {}, "apps[0].webhooks[0].url"),
    ("webhook-event-type", BAD_EVENT_TYPE, {}, "apps[0].webhooks[0].event_types"),
    ("port-range", {"port": 70000}, {}, "port"),
    ("toml-syntax", "[[apps]\nid = ", {}, "not valid TOML"),
    ("reverb-port-env", {}, {"REVERB_SERVER_PORT": "eighty"}, "port"),
    ("relay-app-env", {}, {"RELAY_APP_ID": "1", "RELAY_APP_KEY": "k"}, "secret"),
]


@pytest.mark.parametrize(("config", "env", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_configuration_exits_2_naming_the_field(
    tmp_path: Path, config: dict[str, Any] | str, env: dict[str, str], field: str
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(config if isinstance(config, str) else to_toml(config))
    result = run_relay("serve", "--config", str(path), "--host", "127.0.0.1", env=env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {result.stderr!r}"
    assert lines[0].startswith("relay: invalid configuration: "), lines
    assert field in lines[0], lines
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_relay("serve", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "--config" in result.stderr


def test_version_flag() -> None:
    result = run_relay("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("relay ")


# Running servers --------------------------------------------------------------------------------


async def test_no_configuration_prints_dev_app_banner_and_serves_it(relay_factory: RelayFactory) -> None:
    relay = relay_factory(config_file=False)  # `relay serve` with no configuration at all
    port = relay.port
    await wait_until(lambda: "listening on" in relay.log_text())
    text = relay.log_text()
    for expected in (
        f"app id:     {DEV_APP_ID}",
        f"app key:    {DEV_APP_KEY}",
        f"app secret: {DEV_APP_SECRET}",
        f"ws://127.0.0.1:{port}/app/{DEV_APP_KEY}",
        # the Laravel .env block
        "BROADCAST_CONNECTION=reverb",
        f"REVERB_APP_ID={DEV_APP_ID}",
        f"REVERB_APP_KEY={DEV_APP_KEY}",
        f"REVERB_APP_SECRET={DEV_APP_SECRET}",
        "REVERB_HOST=127.0.0.1",
        f"REVERB_PORT={port}",
        "REVERB_SCHEME=http",
        'VITE_REVERB_APP_KEY="${REVERB_APP_KEY}"',
        # the Echo config
        "broadcaster: 'reverb'",
        f"key: '{DEV_APP_KEY}'",
        f"wsPort: {port}",
        "forceTLS: false",
        "enabledTransports: ['ws', 'wss']",
    ):
        assert expected in text, f"{expected!r} missing from the banner:\n{text}"
    # The printed credentials work: a client connects, the SDK publishes with them.
    client = await connect(ws_url(port, DEV_APP_KEY))
    await client.subscribed("news")
    async with aiohttp.ClientSession() as http:
        api = Api(http, port)
        sdk = api.sdk(DEV_APP_ID, DEV_APP_KEY, DEV_APP_SECRET)
        response = await api.send(
            build_request(sdk, "POST", f"/apps/{DEV_APP_ID}/events", {"name": "hi", "data": "1", "channels": ["news"]})
        )
    assert response.status == 200
    assert (await client.expect("hi", "news"))["data"] == "1"
    assert relay.running


async def test_toml_file_drives_a_running_server(relay_factory: RelayFactory) -> None:
    relay = relay_factory(FULL_TOML.replace("port = 7001", ""))
    # activity_timeout reaches clients; allowed_origins and max_connections are enforced.
    client = await connect(ws_url(relay.port, "key-one"), origin="https://app.example.com")
    assert client.socket_id
    other = await connect(ws_url(relay.port, "key-one"), origin="https://x.example.org")
    refused = await open_socket(ws_url(relay.port, "key-one"), origin="https://x.example.org")
    assert (await refused.recv())["event"] == "pusher:error"
    assert (await refused.closed())[0] == errors.OVER_CAPACITY
    await other.close()
    denied = await open_socket(ws_url(relay.port, "key-two"))
    first = await denied.recv()
    assert first["event"] == "pusher:connection_established"
    assert inner(first)["activity_timeout"] == 30  # the second app has the default
    bad_origin = await open_socket(ws_url(relay.port, "key-one"), origin="https://evil.test")
    assert (await bad_origin.recv())["event"] == "pusher:error"
    assert (await bad_origin.closed())[0] == errors.CONNECTION_UNAUTHORIZED


async def test_toml_activity_timeout_sent_to_clients(relay_factory: RelayFactory) -> None:
    relay = relay_factory(FULL_TOML.replace("port = 7001", ""))
    client = await open_socket(ws_url(relay.port, "key-one"))
    frame = await client.recv()
    assert orjson.loads(frame["data"])["activity_timeout"] == 17


async def test_environment_only_app_and_flags_beat_variables(relay_factory: RelayFactory) -> None:
    # start_relay passes --host/--port flags; RELAY_PORT must lose to them.
    env = {
        "REVERB_APP_ID": "55",
        "REVERB_APP_KEY": "env-only-key",
        "REVERB_APP_SECRET": "env-only-secret",
        "RELAY_PORT": "1",
        "RELAY_APP_ACTIVITY_TIMEOUT": "21",
    }
    relay = relay_factory("", env=env)
    client = await open_socket(ws_url(relay.port, "env-only-key"))
    assert inner(await client.recv())["activity_timeout"] == 21


async def test_sigterm_closes_connections_4200_and_exits_0(relay_factory: RelayFactory) -> None:
    relay = relay_factory()
    client = await connect(relay.ws_url())
    await client.subscribed("news")
    relay.send_signal(signal.SIGTERM)
    frame = await client.expect("pusher:error")
    assert frame["data"]["code"] == errors.RECONNECT_IMMEDIATELY
    # Shutdown has begun: readiness must no longer say 200 (503, or nothing listening any more).
    assert await asyncio.to_thread(http_status, f"{relay.http_url}/ready") in (503, None)
    assert (await client.closed())[0] == errors.RECONNECT_IMMEDIATELY
    assert await asyncio.to_thread(relay.wait_exit) == 0, relay.log_tail()


def test_config_error_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^apps\[0\]\.max_message_size"):
        load_config(
            env={"RELAY_APP_ID": "1", "RELAY_APP_KEY": "k", "RELAY_APP_SECRET": "s", "RELAY_APP_MAX_MESSAGE_SIZE": "10"}
        )


async def test_readiness_answers_503_while_connections_drain(relay_factory: RelayFactory) -> None:
    relay = relay_factory(env={"RELAY_SHUTDOWN_GRACE": "2"})
    # A connected client, closed with 4200 at once: readiness must still be seen false before the port closes.
    client = await connect(relay.ws_url())
    await client.subscribed("news")
    assert await asyncio.to_thread(http_status, f"{relay.http_url}/ready") == 200
    relay.send_signal(signal.SIGTERM)
    statuses: list[int | None] = []
    for _ in range(20):  # the grace period lasts 2 s; 503 must be seen well within it
        statuses.append(await asyncio.to_thread(http_status, f"{relay.http_url}/ready"))
        if statuses[-1] == 503:
            break
        await asyncio.sleep(0.05)
    assert statuses[-1] == 503, statuses
    assert await asyncio.to_thread(relay.wait_exit) == 0, relay.log_tail()
    assert (await client.expect("pusher:error"))["data"]["code"] == errors.RECONNECT_IMMEDIATELY
    assert (await client.closed())[0] == errors.RECONNECT_IMMEDIATELY

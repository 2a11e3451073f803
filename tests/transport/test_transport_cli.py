"""`relay serve` with each transport: how it is chosen (flag, variable, TOML), and what the process does
with it (uvloop, SO_REUSEPORT workers, graceful SIGTERM)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiohttp
import pytest

from relay.config import ConfigError, load_config
from relay.protocol import errors
from tests.integration.wire import Api, connect, wait_until
from tests.support.fixtures import RelayFactory
from tests.support.redis import RedisProcess
from tests.support.relay import DEFAULT_APP, to_toml
from tests.support.timeouts import TIMEOUT


def test_transport_setting_sources() -> None:
    assert load_config(env={}).transport == "lean"
    assert load_config(env={"RELAY_TRANSPORT": "aiohttp"}).transport == "aiohttp"
    assert load_config(env={"RELAY_TRANSPORT": "aiohttp"}, overrides={"transport": "lean"}).transport == "lean"
    with pytest.raises(ConfigError, match=r"^transport: expected lean or aiohttp, got 'fast'"):
        load_config(env={"RELAY_TRANSPORT": "fast"})


def test_unknown_transport_flag_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--transport", "fast"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 2
    assert "--transport" in result.stderr


@pytest.mark.parametrize(
    ("how", "expected"),
    [("default", "lean"), ("flag", "aiohttp"), ("env", "aiohttp"), ("toml", "aiohttp")],
)
async def test_serve_uses_the_chosen_transport(relay_factory: RelayFactory, how: str, expected: str) -> None:
    config = {"apps": [dict(DEFAULT_APP)]}
    if how == "toml":
        config["transport"] = "aiohttp"
    relay = relay_factory(
        to_toml(config),
        extra_args=("--transport", "aiohttp") if how == "flag" else (),
        env={"RELAY_TRANSPORT": "aiohttp"} if how == "env" else None,
    )
    assert f"({expected} transport," in relay.log_text()
    client = await connect(relay.ws_url())
    await client.subscribed("news")
    await client.close()


@pytest.mark.parametrize("transport", ["lean", "aiohttp"])
async def test_sigterm_closes_subscribed_clients_4200_and_exits_0(relay_factory: RelayFactory, transport: str) -> None:
    relay = relay_factory(extra_args=("--transport", transport))
    clients = [await connect(relay.ws_url()) for _ in range(5)]
    for client in clients:
        await client.subscribed("news")
    relay.send_signal(signal.SIGTERM)
    for client in clients:
        frame = await client.expect("pusher:error")
        assert frame["data"]["code"] == errors.RECONNECT_IMMEDIATELY
        assert (await client.closed())[0] == errors.RECONNECT_IMMEDIATELY
    assert await asyncio.to_thread(relay.wait_exit) == 0, relay.log_tail()


async def test_lean_workers_share_the_port(relay_factory: RelayFactory, redis_process: RedisProcess) -> None:
    """--workers 2: both processes accept lean WebSockets on one port (SO_REUSEPORT), HTTP included."""
    relay = relay_factory(extra_args=("--workers", "2", "--redis-url", redis_process.url))
    clients = [await connect(relay.ws_url()) for _ in range(8)]
    for client in clients:
        await client.subscribed("shared")
    async with aiohttp.ClientSession() as session:
        api = Api(session, relay.port)
        sdk = api.sdk(str(DEFAULT_APP["id"]), str(DEFAULT_APP["key"]), str(DEFAULT_APP["secret"]))
        await asyncio.to_thread(sdk.trigger, "shared", "hello", {"n": 1})
    for client in clients:
        await client.expect("hello", "shared")
    await wait_until(lambda: relay.log_text().count("(lean transport,") == 2)

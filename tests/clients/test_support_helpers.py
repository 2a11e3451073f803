"""Checks of tests/support's process helpers, which every suite builds on (they live here
because tests/support is an importable package, not a test directory)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.support import ProcessError, scaled, start_redis, start_relay, to_toml
from tests.support.redis import redis_answers_ping
from tests.support.relay import http_status

pytestmark = pytest.mark.timeout(scaled(60))


def test_to_toml_writes_what_tomllib_reads_back() -> None:
    config: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 8080,
        "apps": [
            {
                "id": "1001",
                "key": 'k"ey\\',
                "secret": "sécret ✓",
                "enable_client_events": False,
                "activity_timeout": 30,
                "pong_timeout": 2.5,
                "allowed_origins": ["*.example.com", "app.test"],
                "webhooks": [{"url": "http://127.0.0.1:1/hook", "event_types": ["channel_occupied"]}],
            },
            {"id": "1002", "key": "second", "secret": "s2"},
        ],
    }

    assert tomllib.loads(to_toml(config)) == config


def test_redis_comes_back_empty_on_the_same_port_after_kill(tmp_path: Path) -> None:
    redis = start_redis(tmp_path)
    try:
        port = redis.port
        assert redis.url == f"redis://127.0.0.1:{port}/0"
        assert redis_answers_ping(port)

        redis.kill()
        assert not redis.running
        assert not redis_answers_ping(port)

        redis.restart()
        assert redis.port == port
        assert redis_answers_ping(port)
    finally:
        redis.stop()
    assert not redis.running


def test_relay_answers_up_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    relay = start_relay(workdir=tmp_path)
    try:
        assert http_status(f"{relay.http_url}/up") == 200
        assert relay.ws_url("app-key") == (
            f"ws://127.0.0.1:{relay.port}/app/app-key?protocol=7&client=js&version=8.6.0&flash=false"
        )
    finally:
        returncode = relay.stop()
    assert returncode == 0, relay.log_tail()
    assert http_status(f"{relay.http_url}/up") is None


def test_start_relay_fails_with_relays_own_message_on_a_bad_config(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="exited with code") as raised:
        start_relay("[[apps]]\nid = '1001'\nkey = 'k'\nsecret = 's'\nno_such_setting = true\n", workdir=tmp_path)

    assert "no_such_setting" in str(raised.value)

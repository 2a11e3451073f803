"""The Dockerfile's steps work as written, carried out without a container engine.

The `image` fixture (tests/deploy/image.py) carries out its instructions in a temporary directory,
with a fresh virtual environment standing in for the image's Python; relay runs as an unprivileged
uid, as the image's USER would. Then relay is started as CMD says, and the HEALTHCHECK command is run exactly as
written against it, and again once relay has stopped on STOPSIGNAL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.dockerfile import seconds
from tests.deploy.image import ROOT, UNPRIVILEGED_UID, Image
from tests.support import ManagedProcess, free_port, scaled

pytestmark = pytest.mark.timeout(scaled(120))

COMPOSE_FILE = ROOT / "docker-compose.yml"


def run_healthcheck(image: Image, env: dict[str, str]) -> tuple[int, float]:
    """The HEALTHCHECK command exactly as written, as the image's user; its exit code and duration."""
    assert image.health is not None
    limit = seconds(image.health.options.get("timeout", "30s"))
    started = time.monotonic()
    result = subprocess.run(
        image.as_user(image.health.command), env=env, cwd=image.workdir, capture_output=True, timeout=limit + 5,
        check=False,
    )  # fmt: skip
    return result.returncode, time.monotonic() - started


def compose_stop_grace() -> float:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return seconds(services["relay-1"]["stop_grace_period"])


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


# -------------------------------------------------------------------------------------------------


def test_image_is_python_3_11_slim_and_runs_relay_as_a_system_user_it_creates(image: Image) -> None:
    assert image.base == "python:3.11-slim"
    assert image.user not in ("root", "0", "")
    (created,) = image.created_users
    assert created[-1] == image.user
    assert "--system" in created and "--no-create-home" in created
    assert image.exposed == ["8080"]
    assert image.stop_signal == "SIGTERM"
    assert image.cmd[:2] == ["relay", "serve"]
    # The package was installed into the image's Python, not left as source only.
    assert (image.venv / "bin" / "relay").is_file()


def test_healthcheck_options_leave_time_to_start_and_fail_fast(image: Image) -> None:
    assert image.health is not None
    options = image.health.options
    assert seconds(options["timeout"]) < seconds(options["interval"])
    assert seconds(options["start-period"]) >= 5
    assert int(options["retries"]) >= 2
    assert image.health.command[0] == "python"  # no curl or wget in the slim image


def test_relay_started_as_cmd_passes_the_healthcheck_and_fails_it_once_stopped(image: Image) -> None:
    port = free_port()
    # Configured by environment as in docker-compose.yml; loopback only, since this is no container.
    env = image.run_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(port))
    relay = ManagedProcess("relay-as-cmd", image.as_user(image.cmd), image.root / "relay.log", env, image.workdir)
    try:
        relay.wait_until(lambda: http_status(f"http://127.0.0.1:{port}/up") == 200, "GET /up answering 200")
        if os.geteuid() == 0:
            assert uid_of(relay.pid) == UNPRIVILEGED_UID  # needs no root, no home, no writable directory

        status, took = run_healthcheck(image, env)
        assert status == 0, relay.log_tail()
        assert image.health is not None
        assert took < seconds(image.health.options["timeout"])

        os.kill(relay.pid, signal.Signals[image.stop_signal])
        deadline = time.monotonic() + compose_stop_grace()
        while relay.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not relay.running, "relay did not exit within the stop grace period"
        assert relay.returncode == 0, relay.log_tail()

        status, _ = run_healthcheck(image, env)
        assert status != 0
    finally:
        relay.stop()


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/up" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("variable", ["RELAY_PORT", "REVERB_SERVER_PORT"])
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_asks_the_port_relay_reads_and_fails_on_an_error_status(
    image: Image, variable: str, status: int, healthy: bool
) -> None:
    handler = type("Answer", (_Answer,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        exit_code, _ = run_healthcheck(image, image.run_env(**{variable: str(server.server_address[1])}))
    finally:
        server.shutdown()
        server.server_close()
    assert (exit_code == 0) is healthy


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            code: int = response.status
            return code
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None

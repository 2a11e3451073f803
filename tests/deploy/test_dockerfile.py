"""The Dockerfile's steps work as written, carried out without a container engine.

Its instructions are read from the file and done one by one in a temporary directory: COPY copies
from the repository, ENV and WORKDIR set the environment, RUN runs with /bin/sh -c in a fresh
virtual environment standing in for the image's Python. The step that creates the USER is not run
(it would add a user to this machine); relay runs as an unprivileged uid instead, as the image's
USER would. Then relay is started as CMD says, and the HEALTHCHECK command is run exactly as
written against it, and again once relay has stopped on STOPSIGNAL.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.dockerfile import Healthcheck, command_argv, env_values, healthcheck, read_instructions, seconds
from tests.support import ManagedProcess, free_port, require_binary, scaled

pytestmark = pytest.mark.timeout(scaled(120))

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Steps that change this machine's users: checked, never run.
USER_COMMANDS = ("useradd", "adduser")
UNPRIVILEGED_UID = 65534  # nobody


@dataclass
class Image:
    """What building the Dockerfile produced, in a temporary directory instead of an image."""

    root: Path
    base: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    user: str = "root"
    created_users: list[list[str]] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    stop_signal: str = "SIGTERM"
    health: Healthcheck | None = None
    cmd: list[str] = field(default_factory=list)

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    def run_env(self, **variables: str) -> dict[str, str]:
        """The container's environment: the image's ENV, PATH with its Python first, `variables`."""
        return {"HOME": "/nonexistent", **self.env, "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                **variables}  # fmt: skip

    def as_user(self, argv: list[str]) -> list[str]:
        """`argv` run as a uid with no privileges, as the image's USER would run it."""
        if os.geteuid() != 0:
            return argv  # already unprivileged
        setpriv = require_binary("setpriv", "install util-linux")
        ids = [f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups"]
        return [setpriv, *ids, *argv]


def build(root: Path) -> Image:
    image = Image(root)
    subprocess.run([sys.executable, "-m", "venv", str(image.venv)], check=True, timeout=scaled(120))
    for instruction in read_instructions(DOCKERFILE):
        arguments = instruction.arguments
        match instruction.keyword:
            case "FROM":
                image.base = arguments
            case "ENV":
                image.env.update(env_values(arguments))
            case "WORKDIR":
                image.workdir = root / arguments.lstrip("/")
                image.workdir.mkdir(parents=True, exist_ok=True)
            case "COPY":
                assert image.workdir is not None, "COPY before WORKDIR"
                *sources, target = arguments.split()
                copy(sources, image.workdir / target)
            case "RUN":
                assert image.workdir is not None, "RUN before WORKDIR"
                run_step(image, arguments)
            case "USER":
                image.user = arguments
            case "EXPOSE":
                image.exposed.extend(arguments.split())
            case "STOPSIGNAL":
                image.stop_signal = arguments
            case "HEALTHCHECK":
                image.health = healthcheck(arguments)
            case "CMD":
                image.cmd = command_argv(arguments)
            case _:
                raise AssertionError(f"this test does not know how to carry out {instruction.keyword}")
    return image


def copy(sources: list[str], target: Path) -> None:
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            destination = target if len(sources) == 1 else target / path.name
            shutil.copytree(path, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)


def run_step(image: Image, command: str) -> None:
    if command.split()[0] in USER_COMMANDS:
        image.created_users.append(command.split())
        return
    # The machine's package index settings (PIP_*) stand in for the build's network; the image's
    # own ENV comes last, so its PIP_NO_CACHE_DIR and the like hold.
    env = {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
    env.update(image.run_env(HOME=str(image.root / "build-home")))
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd=image.workdir, env=env, capture_output=True, text=True,
        timeout=scaled(400), check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"RUN {command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    # Not pytest's tmp_path: its parents are private to this user, and relay runs as another uid.
    root = Path(tempfile.mkdtemp(prefix="relay-image-"))
    root.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        yield build(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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

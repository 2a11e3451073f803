"""The systemd unit and the supervisor program of docs/deploy.md work as printed there.

Both are taken from the page's code blocks. Only where things live on this machine is changed:
the install prefix (/opt/relay) becomes the environment the Dockerfile's steps installed relay
into (the `image` fixture: a fresh venv and `pip install .`), logs go to the test's directory,
the `relay` user becomes `nobody` (there is no `relay` user here), and the Redis URL points at the
test's redis-server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.image import Image
from tests.support import ManagedProcess, RedisProcess, require_binary, scaled

pytestmark = pytest.mark.timeout(scaled(90))

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
# supervisor itself is a test dependency, installed next to this suite's Python.
TOOLS = Path(sys.executable).parent


def ini_block(first_line: str) -> str:
    """The ```ini block of docs/deploy.md that starts with `first_line`."""
    for block in re.findall(r"```ini\n(.*?)```", DEPLOY_DOC.read_text(), re.DOTALL):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"docs/deploy.md has no ```ini block starting with {first_line}")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path, image: Image) -> None:
    analyze = require_binary("systemd-analyze", "install Debian's systemd")
    unit = tmp_path / "relay@.service"
    unit.write_text(ini_block("[Unit]").replace("/opt/relay/bin/relay", str(image.venv / "bin" / "relay")))

    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "relay@8081.service")],
        capture_output=True, text=True, timeout=scaled(30), check=False,
    )  # fmt: skip

    # verify exits 0 even for unknown keys; any message at all means something is wrong.
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr


def test_supervisor_program_runs_two_nodes_and_restarts_one_with_a_graceful_stop(
    tmp_path: Path, redis_process: RedisProcess, image: Image
) -> None:
    supervisord = shutil.which("supervisord", path=str(TOOLS))
    supervisorctl = shutil.which("supervisorctl", path=str(TOOLS))
    assert supervisord and supervisorctl, "supervisor is a test dependency (pyproject.toml)"
    program = ini_block("[program:relay]")
    program = program.replace("/opt/relay", str(image.venv)).replace("/var/log/relay", str(tmp_path))
    program = program.replace("redis://127.0.0.1:6379/0", redis_process.url)
    program = program.replace("user=relay", "user=nobody" if os.geteuid() == 0 else "")
    ports = [int(port) for port in ("8081", "8082")]
    busy = [port for port in ports if ready(port)]
    assert not busy, f"the example's ports are taken on this machine: {busy}"
    socket = tmp_path / "supervisor.sock"
    config = tmp_path / "supervisord.conf"
    config.write_text(
        "\n".join([
            "[supervisord]", "nodaemon=true", f"logfile={tmp_path / 'supervisord.log'}",
            f"pidfile={tmp_path / 'supervisord.pid'}", f"user={'root' if os.geteuid() == 0 else ''}", "",
            "[unix_http_server]", f"file={socket}", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{socket}", "",
            program,
        ])
    )  # fmt: skip
    manager = ManagedProcess("supervisord", [supervisord, "-c", str(config)], tmp_path / "supervisord.out")

    def ctl(*args: str) -> str:
        result = subprocess.run(
            [supervisorctl, "-c", str(config), *args], capture_output=True, text=True, timeout=scaled(60), check=False
        )
        return result.stdout + result.stderr

    try:
        manager.wait_until(lambda: all(ready(port) for port in ports), "both relay nodes ready", scaled(30))

        # As in the rolling deploy: restart the first node; supervisor waits for it to exit.
        restarted = ctl("restart", "relay:relay_1")
        assert "relay:relay_1: stopped" in restarted and "relay:relay_1: started" in restarted, restarted
        manager.wait_until(lambda: ready(ports[0]), "relay_1 ready again", scaled(30))
        assert ready(ports[1])
        log = (tmp_path / "supervisord.log").read_text()
        # Stopped by SIGTERM and exited on its own (0), within stopwaitsecs: never SIGKILLed.
        assert re.search(r"stopped: relay_1 \(exit status 0\)", log), log
        assert "SIGKILL" not in log, log
    finally:
        manager.stop(timeout=scaled(40))

"""The Dockerfile carried out without a container engine, into a temporary directory.

Its instructions are read from the file and done one by one: COPY copies from the repository,
ENV and WORKDIR set the environment, RUN runs with /bin/sh -c in a fresh virtual environment
standing in for the image's Python. The step that creates the USER is not run (it would add a
user to this machine); `Image.as_user` runs commands as an unprivileged uid instead.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.dockerfile import Healthcheck, command_argv, env_values, healthcheck, read_instructions
from tests.support import require_binary, scaled

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# Steps that change this machine's users: checked, never run.
USER_COMMANDS = ("useradd", "adduser")
UNPRIVILEGED_UID = 65534  # nobody


def stock_python() -> str:
    """A Python 3.11 that every user may run, as the image's is (this suite's own may live under /root)."""
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if os.access(candidate, os.X_OK) and os.stat(candidate).st_mode & stat.S_IXOTH:
            return candidate
    return sys.executable


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
    subprocess.run([stock_python(), "-m", "venv", str(image.venv)], check=True, timeout=scaled(120))
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


def build_image() -> Iterator[Image]:
    """Build into a new directory every user may read (not pytest's tmp_path, whose parents are
    private to this user), and remove it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="relay-image-"))
    root.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        yield build(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

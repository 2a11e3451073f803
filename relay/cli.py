"""Command line: argv + environment → Config; logging; runs the server; signals. No protocol logic."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from aiohttp import web

from relay import __version__
from relay.app import reload_apps
from relay.config import Config, ConfigError, load_config, setting_default, setting_type
from relay.logs import configure_logging
from relay.metrics_share import METRICS_DIR_ENV, retire_worker
from relay.redis.link import describe
from relay.server import start_server
from relay.settings import SETTINGS

# Flags set top-level settings only; tables ([redis], [webhook]) come from the file or the environment.
FLAG_SETTINGS: Final = tuple(setting for setting in SETTINGS if setting.flag and not setting.table)

logger = logging.getLogger("relay")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="A Pusher-protocol WebSocket server.")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML file with server settings and [[apps]]")
    for setting in FLAG_SETTINGS:
        default = setting_default(setting)
        serve.add_argument(
            setting.flag_name,
            dest=setting.name,
            type=setting_type(setting),
            choices=setting.choices or None,
            help=setting.meaning.replace("`", "") + ("" if default in (None, "") else f" (default {default})"),
        )
    # Set by `--workers`: each worker binds with SO_REUSEPORT.
    serve.add_argument("--reuse-port", dest="reuse_port", action="store_true", help=argparse.SUPPRESS)
    return parser


def _dev_app_banner(config: Config) -> str:
    app = config.apps[0]
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    return f"""
relay is running with a DEVELOPMENT app (its credentials are public: configure your own apps for production).

  app id:     {app.id}
  app key:    {app.key}
  app secret: {app.secret}
  WebSocket:  ws://{host}:{config.port}{config.path}/app/{app.key}
  HTTP API:   http://{host}:{config.port}{config.path}/apps/{app.id}/events

Laravel .env:

BROADCAST_CONNECTION=reverb
REVERB_APP_ID={app.id}
REVERB_APP_KEY={app.key}
REVERB_APP_SECRET={app.secret}
REVERB_HOST={host}
REVERB_PORT={config.port}
REVERB_SCHEME=http
VITE_REVERB_APP_KEY="${{REVERB_APP_KEY}}"
VITE_REVERB_HOST="${{REVERB_HOST}}"
VITE_REVERB_PORT="${{REVERB_PORT}}"
VITE_REVERB_SCHEME="${{REVERB_SCHEME}}"

Laravel Echo:

window.Echo = new Echo({{
    broadcaster: 'reverb',
    key: '{app.key}',
    wsHost: '{host}',
    wsPort: {config.port},
    wssPort: {config.port},
    forceTLS: false,
    enabledTransports: ['ws', 'wss'],
}});
"""


# Reads the configuration again on SIGHUP; raises ConfigError when the new one is invalid.
Reloader = Callable[[], Config]


async def serve(config: Config, reuse_port: bool = False, reload: Reloader | None = None) -> None:
    """Run until SIGINT/SIGTERM; then readiness turns false, connections close with 4200, state is cleaned.
    SIGHUP reloads the apps (see reload_apps) without dropping connections."""
    server = await start_server(config, reuse_port=reuse_port)
    app = server.app
    # The start-up objects (modules, configuration, routes: ~60k) live as long as the process: frozen,
    # the collector's full passes, which come more often as connections arrive, no longer walk them.
    gc.freeze()
    logger.info(
        "relay %s listening on http://%s:%s (%s transport, pid %s)",
        __version__,
        config.host,
        server.port,
        config.transport,
        os.getpid(),
    )
    for line in _configuration_lines(config):
        logger.info(line)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    if reload is not None:
        reloader = reload

        def on_sighup() -> None:
            task = loop.create_task(_reload(app, config, reloader))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    await stop.wait()
    logger.info("shutting down")
    await server.stop()


async def _reload(app: web.Application, running: Config, reload: Reloader) -> None:
    """SIGHUP: the apps from the file and the environment again; an invalid configuration is refused with
    the start-up message and the running one stays in force."""
    try:
        config = reload()
    except ConfigError as error:
        logger.error("relay: invalid configuration: %s; keeping the running configuration", error)
        return
    summary = await reload_apps(app, config.apps)
    logger.info("configuration reloaded: %s", summary)
    restart_needed = [
        setting.key
        for setting in SETTINGS
        if not setting.table
        and setting.key != "metrics_dir"
        and getattr(config, setting.name, None) != getattr(running, setting.name, None)
    ]
    if restart_needed:
        logger.warning("changed settings that take effect only after a restart: %s", ", ".join(restart_needed))


def _configuration_lines(config: Config) -> list[str]:
    """What an operator needs to see at start-up, and nothing secret (no secrets, no credentials in URLs)."""
    apps = ", ".join(f"{app.id} (key {app.key}{'' if app.enabled else ', disabled'})" for app in config.apps)
    webhooks = sum(len(app.webhooks) for app in config.apps)
    lines = [f"apps: {apps}", f"webhooks: {webhooks} target(s)" if webhooks else "webhooks: none"]
    if config.redis is None:
        lines.append("state: in memory (single node)")
    else:
        lines.append(f"state: Redis at {describe(config.redis.url)} (prefix {config.redis.prefix!r})")
    lines.append(f"alerts: {len(config.alerts.urls)} URL(s)" if config.alerts.urls else "alerts: off")
    lines.append(f"logs: {config.log_format}, level {config.log_level}")
    return lines


# A worker that dies sooner than this after its start is not restarted: it would only fail again
# (the port taken, Redis refusing us), so the whole server stops with its exit code instead.
WORKER_MIN_LIFETIME: Final = 5.0
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """In each worker, before exec: SIGTERM when the parent dies, even by SIGKILL (Linux prctl)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _run_workers(config: Config, argv: Sequence[str]) -> int:
    """N copies of this server on one port (SO_REUSEPORT), sharing state through Redis.

    A worker that crashes is started again, so the port keeps N processes behind it; SIGTERM and
    SIGINT are passed on to every worker and the parent returns once all have exited.
    """
    args = [sys.executable, "-m", "relay", *argv, "--workers", "1", "--reuse-port"]
    stopping = False
    failure = 0  # the exit code of a worker that died at start-up, which the parent then returns
    # Where the workers share their /metrics figures, so one scrape shows the whole process.
    metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
    env = {**os.environ, METRICS_DIR_ENV: metrics_dir}

    def spawn() -> tuple[subprocess.Popen[bytes], float]:
        return subprocess.Popen(args, preexec_fn=_die_with_parent, env=env), time.monotonic()

    children = [spawn() for _ in range(config.workers)]

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child, _ in children:
            if child.poll() is None:
                child.send_signal(signum)

    def forward_reload(signum: int, _frame: object) -> None:
        for child, _ in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward_reload)  # each worker reloads its own apps
    while not all(child.poll() is not None for child, _ in children) or not stopping:
        for index, (child, started) in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            if time.monotonic() - started < WORKER_MIN_LIFETIME:
                print(f"relay: worker {child.pid} exited with {code} right after starting; stopping", file=sys.stderr)
                failure = abs(code) or 1
                forward(signal.SIGTERM, None)
                break
            print(f"relay: worker {child.pid} exited with {code}; starting a new one", file=sys.stderr)
            retire_worker(Path(metrics_dir), child.pid)
            children[index] = spawn()
        time.sleep(0.1)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return failure or max(abs(int(child.returncode)) for child, _ in children)


def _without_workers_flag(arguments: Sequence[str]) -> list[str]:
    kept: list[str] = []
    skip_value = False
    for argument in arguments:
        if skip_value:
            skip_value = False
        elif argument == "--workers":
            skip_value = True
        elif not argument.startswith("--workers="):
            kept.append(argument)
    return kept


def _reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(arguments)
    overrides = {setting.name: getattr(options, setting.name) for setting in FLAG_SETTINGS}
    try:
        config = load_config(options.config, overrides=overrides)
    except ConfigError as error:
        print(f"relay: invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, "json" if config.log_format == "json" else "text")
    if config.workers > 1:
        if not _reuse_port_supported():
            print("relay: --workers needs SO_REUSEPORT, which this platform lacks", file=sys.stderr)
            raise SystemExit(2)
        raise SystemExit(_run_workers(config, _without_workers_flag(arguments)))
    if config.dev_app:
        print(_dev_app_banner(config), flush=True)
    try:
        _run(config, options.reuse_port, lambda: load_config(options.config, overrides=overrides))
    except OSError as error:
        # Most often the port is taken: say so in one line instead of a traceback.
        print(f"relay: cannot serve on {config.host}:{config.port}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(1) from None


def _run(config: Config, reuse_port: bool, reload: Reloader) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional on platforms without wheels
        asyncio.run(serve(config, reuse_port=reuse_port, reload=reload))
    else:
        uvloop.run(serve(config, reuse_port=reuse_port, reload=reload))

"""`python -m bench` / `bench/run`: pick servers and scenarios, start each server fresh for every
scenario, print one line per scenario per server plus relay/soketi ratios, write JSON results."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Final

import orjson
import uvloop

from bench.cpublisher import c_publisher_ready
from bench.limits import raise_nofile
from bench.results import Result, format_line, ratio_lines
from bench.scenarios.base import Context
from bench.scenarios.registry import DEFAULT_GROUPS, GROUPS, NEEDS_PYTHON_WORKER, Scenario
from bench.servers import (
    BENCH_DIR,
    REPO_ROOT,
    App,
    ServerHandle,
    open_console,
    relay_available,
    soketi_available,
    start_redis,
    start_relay,
    start_soketi,
    stop_process,
)
from bench.sizes import FULL, QUICK
from bench.target import Target
from bench.workers import WorkerPool, c_receiver_ready

# The `relay-console` server's console token (loopback only, thrown away with the server).
CONSOLE_TOKEN: Final = "bench-console-token-0123456789"

# The servers that are relay; relay-recovery keeps a recovery history of every channel (docs/recovery.md).
RELAY_SERVERS = ("relay", "relay-workers", "relay-console", "relay-recovery")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument(
        "--servers",
        default="relay,soketi",
        help="comma-separated: relay, relay-workers (relay --workers N on one port, with a Redis), relay-console "
        "(relay with one debug console open all along), relay-recovery (relay with `recovery = true` for its "
        "app), soketi "
        "(default relay,soketi; relay skipped if relay/cli.py is missing)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_GROUPS),
        help=f"comma-separated groups from {', '.join(GROUPS)} (default all but cluster)",
    )
    p.add_argument(
        "--cluster", action="store_true", help="also run cross-node fan-out: two nodes of each server sharing a Redis"
    )
    p.add_argument("--quick", action="store_true", help="small counts; checks the suite works in ~2 minutes")
    p.add_argument(
        "--pin",
        dest="pin",
        action="store_true",
        default=(os.cpu_count() or 1) >= 2,
        help="pin server and generator to different cores (default when there are 2+ cores)",
    )
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--server-cpus", default="0", help="taskset cpu list for servers (and Redis) when pinning")
    p.add_argument("--generator-cpus", default="1", help="cpu list for the generator when pinning")
    p.add_argument(
        "--publisher",
        choices=("auto", "c", "python"),
        default="auto",
        help="HTTP API scenarios' request generator (auto: bench/c/publisher when built)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="subscriber worker processes (more only helps with more generator cores)"
    )
    p.add_argument(
        "--receiver",
        choices=("auto", "c", "python"),
        default="auto",
        help="subscriber implementation for public-channel scenarios: the C receiver "
        "(bench/c/receiver, built by bench/run) or the Python worker; auto = C when built",
    )
    p.add_argument("--port", type=int, default=7100, help="first port for servers we start")
    p.add_argument("--relay-python", default=sys.executable, help="interpreter that runs `-m relay serve`")
    p.add_argument(
        "--relay-source",
        type=Path,
        default=REPO_ROOT,
        help="directory holding the relay package to run (default: this checkout)",
    )
    p.add_argument(
        "--relay-workers", type=int, default=2, help="worker processes of the relay-workers server (default 2)"
    )
    p.add_argument(
        "--relay-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `relay serve`, repeatable (e.g. --relay-arg=--transport --relay-arg=aiohttp)",
    )
    p.add_argument("--redis-port", type=int, default=7390, help="port of the Redis started for --cluster")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    ext = p.add_argument_group("an already running server (replaces --servers)")
    ext.add_argument("--target", help="host:port of a running Pusher-protocol server (loopback only)")
    ext.add_argument("--target-b", help="host:port of its second node, for --cluster")
    ext.add_argument("--name", default="external", help="label for the running server in results")
    ext.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="PID of the running server, for CPU and RSS (repeatable; omitted: not measured)",
    )
    p.add_argument("--app-id", default="1")
    p.add_argument("--key", default="bench-key")
    p.add_argument("--secret", default="bench-secret")
    return p.parse_args(argv)


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") and not host.startswith("127."):
        raise SystemExit(f"refusing to load {host}: the benchmark only targets loopback addresses")
    return host.strip("[]") or "127.0.0.1", int(port)


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.app = App(args.app_id, args.key, args.secret)
        self.server_core = args.server_cpus if args.pin else ""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.stamp = stamp
        self.logdir: Path = args.results_dir / f"logs-{stamp}"
        self.results: list[Result] = []
        self.pools: dict[str, WorkerPool] = {}
        if args.receiver == "c" and not c_receiver_ready():
            raise SystemExit(
                "bench/c/receiver is missing or older than receiver.c: run bench/run, or "
                "cc -O2 -o bench/c/receiver bench/c/receiver.c"
            )
        self.receiver = "c" if args.receiver == "c" or (args.receiver == "auto" and c_receiver_ready()) else "python"
        if args.publisher == "c" and not c_publisher_ready():
            raise SystemExit(
                "bench/c/publisher is missing or older than publisher.c: run bench/run, or "
                "cc -O2 -o bench/c/publisher bench/c/publisher.c -lcrypto"
            )
        self.publisher = (
            "c" if args.publisher == "c" or (args.publisher == "auto" and c_publisher_ready()) else "python"
        )

    async def pool(self, kind: str) -> WorkerPool:
        if kind not in self.pools:
            pool = WorkerPool(self.args.workers, kind)
            self.pools[kind] = pool
            await pool.start()
        return self.pools[kind]

    def log(self, message: str) -> None:
        print(message, flush=True)

    async def start(self, server: str, cluster: bool) -> ServerHandle:
        ports = [self.args.port, self.args.port + 1] if cluster else [self.args.port]
        if server == "external":
            targets = [
                Target(*_host_port(t), self.app.app_id, self.app.key, self.app.secret)
                for t in (self.args.target, self.args.target_b)
                if t
            ]
            return ServerHandle(self.args.name, targets, list(self.args.server_pid))
        redis_url = ""
        redis_proc = None
        # relay's workers share state through Redis, like nodes do.
        if cluster or server == "relay-workers":
            redis_proc = await start_redis(self.args.redis_port, self.server_core, self.logdir)
            redis_url = f"redis://127.0.0.1:{self.args.redis_port}"
        try:
            if server in RELAY_SERVERS:
                handle = await start_relay(
                    ports,
                    self.app,
                    self.server_core,
                    self.logdir,
                    self.args.relay_python,
                    redis_url,
                    self.args.relay_workers if server == "relay-workers" else 0,
                    self.args.relay_source,
                    self.args.relay_arg,
                    CONSOLE_TOKEN if server == "relay-console" else "",
                    recovery=server == "relay-recovery",
                )
                handle.name = server
                if server == "relay-console":
                    generator_core = self.args.generator_cpus if self.args.pin else ""
                    try:
                        await open_console(handle, CONSOLE_TOKEN, generator_core, self.logdir, self.args.relay_python)
                    except BaseException:
                        handle.stop()
                        raise
            else:
                handle = await start_soketi(
                    [p + 100 for p in ports], self.app, self.server_core, self.logdir, redis_url
                )
        except BaseException:
            if redis_proc is not None:
                stop_process(redis_proc)
            raise
        handle.cores = _cpu_list(self.server_core) if self.server_core else []
        if redis_proc is not None:
            handle.procs.append(redis_proc)  # stopped after the nodes
            handle.redis_pids.append(redis_proc.pid)
        return handle

    async def run_one(self, server: str, group: str, scenario: Scenario, pool: WorkerPool) -> Result:
        handle: ServerHandle | None = None
        try:
            handle = await self.start(server, cluster=group == "cluster")
            return await scenario(Context(handle, pool, self.sizes, self.log, self.publisher))
        except Exception as exc:  # boundary: one broken scenario must not stop the others
            with open(self.logdir / "errors.log", "a") as f:
                f.write(f"--- {server} {group}\n{traceback.format_exc()}\n")
            name = scenario.__name__.replace("_", "-")
            lines = [line for line in str(exc).splitlines() if line.strip()]
            # A server that died prints a traceback: its first and last lines say enough here.
            brief = lines[0] + (f" ... {lines[-1].strip()}" if len(lines) > 1 else "") if lines else ""
            return Result(
                server if handle is None else handle.name, name, {}, "", error=f"{type(exc).__name__}: {brief}"[:400]
            )
        finally:
            if handle is not None:
                handle.stop()
            try:
                await pool.close_connections()
            except (RuntimeError, OSError, TimeoutError):
                pass  # interrupted mid-command: pool.stop() below ends the workers by PID

    def servers(self) -> list[str]:
        if self.args.target:
            return ["external"]
        chosen = []
        for name in self.args.servers.split(","):
            name = name.strip()
            if name in RELAY_SERVERS and not relay_available(self.args.relay_source):
                self.log("relay: skipped, relay/cli.py does not exist yet")
            elif name == "soketi" and not soketi_available():
                self.log("soketi: skipped, bench/soketi/node_modules missing (run bench/run, which installs it)")
            elif name in (*RELAY_SERVERS, "soketi"):
                chosen.append(name)
            else:
                raise SystemExit(f"unknown server {name!r}")
        return chosen

    def groups(self) -> list[str]:
        groups = [g.strip() for g in self.args.scenarios.split(",") if g.strip()]
        for g in groups:
            if g not in GROUPS:
                raise SystemExit(f"unknown scenario {g!r}; choose from {', '.join(GROUPS)}")
        if self.args.cluster and "cluster" not in groups:
            groups.append("cluster")
        return groups

    async def run(self) -> int:
        self.logdir.mkdir(parents=True, exist_ok=True)
        servers, groups = self.servers(), self.groups()
        if not servers:
            self.log("no server to benchmark")
            return 1
        self.log(
            f"# {machine_summary()}; pin: server cpus {self.server_core or '-'}, generator cpus "
            f"{self.args.generator_cpus if self.args.pin else '-'}; {'quick' if self.args.quick else 'full'} "
            f"sizes; {self.args.workers} {self.receiver} receiver worker(s); {self.publisher} HTTP publisher; "
            f"logs in {self.logdir}"
        )
        try:
            for server in servers:
                for group in groups:
                    for scenario in GROUPS[group]:
                        kind = "python" if scenario in NEEDS_PYTHON_WORKER else self.receiver
                        result = await self.run_one(server, group, scenario, await self.pool(kind))
                        result.metrics["receiver"] = kind
                        self.results.append(result)
                        self.log(format_line(result))
        finally:
            for pool in self.pools.values():
                await pool.stop()
            self.write_json()
        self.log("\n== summary ==")
        for result in self.results:
            self.log(format_line(result))
        for line in all_ratio_lines(self.results):
            self.log(line)
        self.log(f"results: {self.json_path}")
        return 1 if any(r.error for r in self.results) else 0

    @property
    def json_path(self) -> Path:
        return Path(self.args.results_dir) / f"bench-{self.stamp}{'-quick' if self.args.quick else ''}.json"

    def write_json(self) -> None:
        doc = {
            "started": self.stamp,
            "machine": machine_info(),
            "argv": sys.argv[1:],
            "sizes": self.sizes,
            "pinned": self.args.pin,
            "receiver": self.receiver,
            "publisher": self.publisher,
            "results": [
                {
                    "server": r.server,
                    "scenario": r.scenario,
                    "line": format_line(r),
                    "error": r.error,
                    "metrics": r.metrics,
                    "steps": r.details,
                }
                for r in self.results
            ],
            "ratios": all_ratio_lines(self.results),
        }
        self.json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def all_ratio_lines(results: list[Result]) -> list[str]:
    return (
        ratio_lines(results)
        + ratio_lines(results, numerator="relay-workers")
        + ratio_lines(results, numerator="relay-console", denominator="relay")
        + ratio_lines(results, numerator="relay-recovery", denominator="relay")
    )


def machine_info() -> dict[str, str | int]:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count() or 0,
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _output(["node", "--version"]),
        "git_commit": _output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
    }


def machine_summary() -> str:
    m = machine_info()
    return f"{m['cpus']} cpus ({m['cpu_model']}), kernel {m['kernel']}, python {m['python']}, node {m['node']}"


def _output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


async def _main(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM takes the same path as Ctrl-C: cancel, and let every finally stop what it started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await Runner(args).run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.pin:
        os.sched_setaffinity(0, {int(c) for c in _cpu_list(args.generator_cpus)})
    raise_nofile()
    try:
        return uvloop.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers and workers stopped", file=sys.stderr)
        return 130


def _cpu_list(spec: str) -> list[int]:
    cpus: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus

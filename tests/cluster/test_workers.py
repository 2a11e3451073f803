"""`relay serve --workers 2 --redis-url ...`: two processes share one port (SO_REUSEPORT) and Redis.

Which worker holds a connection is read from Linux's /proc: the socket inodes each worker has open,
matched against /proc/net/tcp{,6} entries on the server port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from relay.metrics_share import WRITE_INTERVAL
from tests.cluster.conftest import APP, Cluster, ClusterNode, barrier, unique
from tests.integration.wire import Client, connect
from tests.support.fixtures import RelayFactory
from tests.support.metrics import scrape_samples
from tests.support.redis import RedisProcess
from tests.support.relay import RelayProcess
from tests.support.timeouts import STARTUP_TIMEOUT, STOP_TIMEOUT, TIMEOUT, scaled

pytestmark = pytest.mark.timeout(scaled(90))

WORKERS = 2
_LISTEN, _ESTABLISHED = "0A", "01"


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def tcp_inodes(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets whose local port is `port`, in `state` (hex, as /proc/net/tcp writes it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    inodes.add(fields[9])
    return inodes


def per_worker(workers: set[int], port: int, state: str) -> dict[int, int]:
    """How many sockets in `state` on `port` each worker holds."""
    sockets = tcp_inodes(port, state)
    return {pid: len(socket_inodes(pid) & sockets) for pid in workers}


@pytest.fixture
def workers_relay(redis_process: RedisProcess, relay_factory: RelayFactory) -> Iterator[tuple[RelayProcess, set[int]]]:
    """The parent `relay serve --workers 2` and its worker PIDs, once both workers listen."""
    config = {"redis": {"prefix": unique("relay-workers-")}, "apps": [dict(APP)]}
    parent = relay_factory(config, extra_args=["--workers", str(WORKERS), "--redis-url", redis_process.url])
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            workers = children_of(parent.pid)
            listening = per_worker(workers, parent.port, _LISTEN)
            if len(workers) == WORKERS and all(listening.values()):
                break
            assert time.monotonic() < deadline, f"workers {listening} not all listening\n{parent.log_tail()}"
            time.sleep(0.05)
        yield parent, workers
    finally:
        parent.stop()
        for pid in workers:  # never leave a worker behind, even when the test failed
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def test_two_workers_serve_one_port_and_share_events(
    workers_relay: tuple[RelayProcess, set[int]], redis_process: RedisProcess
) -> None:
    parent, workers = workers_relay
    async with aiohttp.ClientSession() as http:
        # One "node" reached through the shared port: the kernel picks a worker per connection.
        cluster = Cluster(redis_process, [ClusterNode(0, parent)], http, APP, prefix="")
        channel = unique("private-shared-")
        clients: list[Client] = []
        try:
            # Connect until each worker holds at least two (odds of 64 all landing on one: 2**-63).
            spread = {pid: 0 for pid in workers}
            while len(clients) < 64 and min(spread.values()) < 2:
                client = await cluster.connect(0)
                await cluster.subscribe(client, channel)
                clients.append(client)
                spread = per_worker(workers, parent.port, _ESTABLISHED)
            assert min(spread.values()) >= 2, f"connections per worker: {spread}"
            print(f"connections per worker after {len(clients)} connects: {spread}")

            # An API event and a client event, each reaching every client on both workers exactly once.
            await cluster.trigger(0, channel, "hello", "both")
            for client in clients:
                assert await client.recv() == {"event": "hello", "channel": channel, "data": "both"}
            sender, *others = clients
            await sender.send({"event": "client-ping", "channel": channel, "data": {"from": sender.socket_id}})
            for client in others:
                assert (await client.expect("client-ping", channel))["data"] == {"from": sender.socket_id}
            await barrier(cluster, clients, channel)
        finally:
            await cluster.close_clients()


def test_sigterm_to_the_parent_stops_every_worker(workers_relay: tuple[RelayProcess, set[int]]) -> None:
    parent, workers = workers_relay
    assert all(alive(pid) for pid in workers)

    code = parent.stop(timeout=STOP_TIMEOUT)  # SIGTERM; SIGKILL only if it lingers past the timeout

    assert code == 0, f"parent exited with {code}\n{parent.log_tail()}"
    deadline = time.monotonic() + TIMEOUT
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "workers outlived their parent"
    assert not tcp_inodes(parent.port, _LISTEN), "the port is still listening"


def test_a_crashed_worker_is_replaced_and_workers_die_with_the_parent(
    workers_relay: tuple[RelayProcess, set[int]],
) -> None:
    parent, workers = workers_relay
    victim = min(workers)
    time.sleep(scaled(5))  # past the start-up window in which a crash stops the whole server
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        current = children_of(parent.pid)
        listening = per_worker(current, parent.port, _LISTEN)
        if victim not in current and len(current) == WORKERS and all(listening.values()):
            break
        assert time.monotonic() < deadline, f"no replacement worker: {listening}\n{parent.log_tail()}"
        time.sleep(0.05)
    assert alive(parent.pid)
    replacement = current - workers
    assert len(replacement) == 1
    workers |= replacement  # the fixture also stops it if this test fails

    # A parent killed without warning takes its workers with it (PR_SET_PDEATHSIG), leaving no orphan.
    os.kill(parent.pid, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    while any(alive(pid) for pid in current) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in current if alive(pid)], "workers outlived a killed parent"


def test_workers_that_cannot_start_stop_the_server_with_their_error(redis_process: RedisProcess) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        args = ["--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--redis-url", redis_process.url]
        result = subprocess.run(
            [sys.executable, "-m", "relay", "serve", *args], capture_output=True, text=True, timeout=STARTUP_TIMEOUT
        )
    finally:
        taken.close()
    assert result.returncode == 1, result.stderr
    assert "address already in use" in result.stderr
    assert "right after starting; stopping" in result.stderr


async def test_one_scrape_shows_every_worker(workers_relay: tuple[RelayProcess, set[int]]) -> None:
    """Whichever worker answers /metrics, it counts the connections of both (relay.metrics_share)."""
    parent, workers = workers_relay
    clients: list[Client] = []
    try:
        spread = {pid: 0 for pid in workers}
        while len(clients) < 64 and min(spread.values()) < 2:
            clients.append(await connect(parent.ws_url(str(APP["key"]))))
            spread = per_worker(workers, parent.port, _ESTABLISHED)
        assert min(spread.values()) >= 2, f"connections per worker: {spread}"
        # A worker shares its figures once a second (relay.metrics_share.WRITE_INTERVAL): let both catch up.
        await asyncio.sleep(WRITE_INTERVAL * 1.5)
        async with aiohttp.ClientSession() as http:
            # Each scrape lands on one worker (a new connection each time): both must answer for all.
            for _ in range(8):
                async with http.get(f"{parent.http_url}/metrics", headers={"Connection": "close"}) as response:
                    text = await response.text()
                found = scrape_samples(text)
                assert found[("relay_connections", (("app_id", str(APP["id"])),))] == len(clients), text
                opened = found[("relay_connections_opened_total", (("app_id", str(APP["id"])),))]
                assert opened == len(clients), text
    finally:
        for client in clients:
            await client.close()

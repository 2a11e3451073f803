"""Server-side CPU per operation: connect+subscribe, signed publish, fan-out delivery.

Starts one relay (in-memory adapter) on loopback, drives it with raw sockets from this process, and
reads the server's utime+stime from /proc before and after each phase: CPU-us per operation inside the
server, far less noisy on a shared machine than throughput. `--profile FILE` runs the server under
cProfile (the figures are then inflated; use it for where, not how much).

    PYTHONPATH=. python bench/micro/server_costs.py [--connects 5000] [--publishes 20000] [--fanout 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """utime and stime of `pid` in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def run_ns(pid: int) -> int:
    """Nanoseconds every thread of `pid` ran on a CPU (schedstat: finer than utime's clock ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
            total += int(f.read().split()[0])
    return total


def snapshot(pid: int) -> tuple[float, float, int]:
    return (*cpu_split(pid), run_ns(pid))


def per_operation(pid: int, before: tuple[float, float, int], count: int) -> str:
    """Server CPU since `before` per operation, in us (schedstat), with the user/system split (ticks)."""
    user, system = cpu_split(pid)
    user, system = (user - before[0]) * 1e6 / count, (system - before[1]) * 1e6 / count
    precise = (run_ns(pid) - before[2]) / 1e3 / count
    return f"server CPU {precise:.1f} us each (user {user:.0f}, sys {system:.0f})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_relay(port: int, workdir: Path, profile: str, extra: list[str], core: str = "") -> subprocess.Popen[bytes]:
    config = workdir / "relay.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = {port}\n\n[[apps]]\nid = "{APP_ID}"\nkey = "{KEY}"\nsecret = "{SECRET}"\n'
        "max_connections = 100000\nactivity_timeout = 120\n"
    )
    runner = ["-m", "cProfile", "-o", profile] if profile else []
    module = os.environ.get("COSTS_SERVER_MODULE", "relay")  # another server with relay's CLI, to compare
    cmd = [sys.executable, *runner, "-m", module, "serve", "--config", str(config), *extra]
    if core:
        cmd = ["taskset", "-c", core, *cmd]
    log = open(workdir / "relay.log", "wb")  # lives as long as the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"relay did not start; see {workdir / 'relay.log'}")


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + masked


async def read_until(reader: asyncio.StreamReader, marker: bytes, buffer: bytearray) -> None:
    while marker not in buffer:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk


async def connect_and_subscribe(port: int, channel: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /app/{KEY}?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = bytearray()
    await read_until(reader, b"connection_established", buffer)
    writer.write(masked_text(b'{"event":"pusher:subscribe","data":{"channel":"%s"}}' % channel.encode()))
    await read_until(reader, b"subscription_succeeded", buffer)
    return reader, writer


async def phase_connects(port: int, pid: int, count: int, in_flight: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    semaphore = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with semaphore:
            _, writer = await connect_and_subscribe(port, f"channel-{i}")
            writers.append(writer)

    before = snapshot(pid)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    cost = per_operation(pid, before, count)
    print(f"connect+subscribe: {count} in {elapsed:.2f}s ({count / elapsed:.0f}/s), {cost}")
    return writers


async def phase_disconnects(pid: int, writers: list[asyncio.StreamWriter], port: int) -> None:
    before = snapshot(pid)
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(0.5)
    # Wait until the server is idle again (its CPU stops moving).
    last = cpu_seconds(pid)
    while True:
        await asyncio.sleep(0.3)
        now = cpu_seconds(pid)
        if now == last:
            break
        last = now
    print(f"disconnect: {len(writers)}, {per_operation(pid, before, len(writers))}")


def publish_request(channel: str) -> bytes:
    body = b'{"name":"bench","channel":"%s","data":"{\\"n\\":1}"}' % channel.encode()
    path = f"/apps/{APP_ID}/events"
    ts = int(time.time())
    params = f"auth_key={KEY}&auth_timestamp={ts}&auth_version=1.0&body_md5={hashlib.md5(body).hexdigest()}"
    signature = hmac.new(SECRET.encode(), f"POST\n{path}\n{params}".encode(), hashlib.sha256).hexdigest()
    return (
        f"POST {path}?{params}&auth_signature={signature} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def phase_publishes(port: int, pid: int, count: int, connections: int, channel: str, label: str) -> None:
    request = publish_request(channel)
    per_connection = count // connections

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_connection):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode())
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()

    before = snapshot(pid)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    total = per_connection * connections
    print(f"{label}: {total} in {elapsed:.2f}s ({total / elapsed:.0f}/s), {per_operation(pid, before, total)}")


async def phase_fanout(port: int, pid: int, subscribers: int, events: int) -> None:
    readers = []
    for _ in range(subscribers // 100):
        pairs = await asyncio.gather(*(connect_and_subscribe(port, "fanout") for _ in range(100)))
        readers.extend(pairs)
    expected = events

    async def drain(reader: asyncio.StreamReader) -> None:
        seen = 0
        while seen < expected:
            chunk = await reader.read(65536)
            seen += chunk.count(b'"event":"bench"')

    drains = [asyncio.ensure_future(drain(reader)) for reader, _ in readers]
    request = publish_request("fanout")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # A connection on no channel pings throughout, from its own process (this one is busy reading): its
    # round trips show how long the server's loop is held by a fan-out.
    prober = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", str(port), stdout=asyncio.subprocess.PIPE
    )
    assert prober.stdout is not None
    await prober.stdout.readline()  # connected
    before = snapshot(pid)
    started = time.perf_counter()
    for _ in range(events):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
    await asyncio.gather(*drains)
    elapsed = time.perf_counter() - started
    prober.send_signal(signal.SIGINT)
    round_trips = sorted(float(line) for line in (await prober.stdout.read()).split())
    await prober.wait()
    p99 = round_trips[int(len(round_trips) * 0.99)] * 1e3
    print(f"ping during fan-out: {len(round_trips)} round trips, p99 {p99:.1f} ms, max {round_trips[-1] * 1e3:.1f} ms")
    frames = subscribers * events
    cost = per_operation(pid, before, frames)
    print(f"fan-out: {events} events x {subscribers} subscribers in {elapsed:.2f}s, per frame {cost}")
    writer.close()
    for _, w in readers:
        w.transport.abort()


def probe(port: int) -> None:
    """The --probe process: ping every 2 ms until SIGINT, then print each round trip's seconds."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = b""
    while b"connection_established" not in buffer:
        buffer += sock.recv(65536)
    print("connected", flush=True)
    round_trips = []
    try:
        while True:
            sent = time.perf_counter()
            sock.sendall(masked_text(b'{"event":"pusher:ping","data":{}}'))
            buffer = b""
            while b"pusher:pong" not in buffer:
                buffer += sock.recv(65536)
            round_trips.append(time.perf_counter() - sent)
            time.sleep(0.002)
    except KeyboardInterrupt:
        pass
    print("\n".join(map(str, round_trips)), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connects", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--publishes", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--fanout", type=int, default=0, help="subscribers on one channel (0: skip)")
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--profile", default="", help="write the server's cProfile stats here")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `relay serve` argument")
    parser.add_argument("--server-core", default="", help="pin the server to this core (as bench/run does)")
    parser.add_argument("--generator-core", type=int, default=-1, help="pin this process to this core")
    args = parser.parse_args()
    if args.generator_core >= 0:
        os.sched_setaffinity(0, {args.generator_core})
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_relay(port, Path(tmp), args.profile, ["--port", str(port), *args.server_arg], args.server_core)
        try:
            if args.connects:
                writers = await phase_connects(port, proc.pid, args.connects, args.in_flight)
                await phase_disconnects(proc.pid, writers, port)
            if args.publishes:
                await phase_publishes(port, proc.pid, args.publishes, args.connections, "nobody", "publish")
            if args.fanout:
                await phase_fanout(port, proc.pid, args.fanout, args.events)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe(int(sys.argv[2]))
        sys.exit(0)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())

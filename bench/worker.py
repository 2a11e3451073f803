"""A subscriber worker process: holds many PusherClient connections and obeys JSON-line commands on
stdin, answering one JSON line per command on stdout. Run as `python -m bench.worker`.

Commands: connect, churn, stats, close, exit (see Worker.handle). Subscribers live in their own
processes so the publisher's timing in the parent is not held up by the receive loop, and so
several workers can share the load on machines with more cores.
"""

import asyncio
import base64
import sys
import time
from typing import Any

import orjson
import uvloop

from bench.limits import raise_nofile
from bench.subscriber import PusherClient, Stats
from bench.wire import handshake_request

Command = dict[str, Any]


class Worker:
    def __init__(self) -> None:
        self.stats = Stats()
        self.clients: list[PusherClient] = []

    async def handle(self, cmd: Command) -> Command:
        name = cmd["cmd"]
        if name == "connect":
            return await self.connect(cmd)
        if name == "churn":
            return await self.churn(cmd)
        if name == "stats":
            return self.report(bool(cmd.get("reset", False)))
        if name == "close":
            return await self.close(float(cmd.get("timeout", 10.0)))
        raise ValueError(f"unknown command {name!r}")

    async def connect(self, cmd: Command) -> Command:
        """Open `count` connections (at most `concurrency` handshakes at once), each subscribing to
        `channel` formatted with its global index `{i}` (or `{m}`: index modulo channel_mod);
        presence channels get user id `{user_prefix}{i}`."""
        loop = asyncio.get_running_loop()
        host, port, key, secret = cmd["host"], int(cmd["port"]), cmd["key"], cmd.get("secret", "")
        request = handshake_request(host, port, key)
        channel_pattern: str = cmd.get("channel", "")
        user_prefix: str = cmd.get("user_prefix", "")
        watcher = bool(cmd.get("watcher", False))
        first = int(cmd.get("first_index", 0))
        modulo = int(cmd.get("channel_mod", 0)) or 1 << 62
        count = int(cmd["count"])
        deadline = loop.time() + float(cmd.get("timeout", 60.0))
        sem = asyncio.Semaphore(int(cmd.get("concurrency", 200)))
        errors: list[str] = []
        started = time.monotonic()

        async def open_one(i: int) -> bool:
            channel = channel_pattern.format(i=i, m=i % modulo) if channel_pattern else ""
            user_id = f"{user_prefix}{i}" if user_prefix and channel.startswith("presence-") else ""
            async with sem:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    async with asyncio.timeout(remaining):
                        _, client = await loop.create_connection(
                            lambda: PusherClient(self.stats, request, key, secret, channel, user_id, watcher),
                            host,
                            port,
                        )
                        self.clients.append(client)
                        await (client.subscribed if channel else client.established)
                    return True
                except (OSError, ConnectionError, TimeoutError) as exc:
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    return False

        results = await asyncio.gather(*(open_one(first + j) for j in range(count)))
        ok = sum(results)
        return {
            "ok": ok,
            "failed": count - ok,
            "elapsed": time.monotonic() - started,
            "errors": errors,
            "last_error": self.stats.last_error,
        }

    async def churn(self, cmd: Command) -> Command:
        """Every open connection not yet subscribed runs `cycles` presence join/leave cycles."""
        channel, cycles = cmd["channel"], int(cmd["cycles"])
        churners = [c for c in self.clients if not c.channel and not c.closing]
        started = time.monotonic()
        for n, client in enumerate(churners):
            client.start_churn(channel, cycles, f"{cmd['user_prefix']}{n}")
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(c.churn_done) for c in churners], timeout=float(cmd.get("timeout", 60.0))
        )
        return {
            "churners": len(churners),
            "completed": sum(1 for f in done if f.exception() is None),
            "joins": self.stats.joins,
            "elapsed": time.monotonic() - started,
        }

    def report(self, reset: bool) -> Command:
        s = self.stats
        out = {
            "received": s.received,
            "latencies": base64.b64encode(s.latencies.tobytes()).decode(),
            "errors": s.errors,
            "last_error": s.last_error,
            "closed": s.closed,
            "member_added": s.member_added,
            "member_removed": s.member_removed,
            "member_frames": s.member_frames,
            "joins": s.joins,
            "open": sum(
                1 for c in self.clients if not c.closing and c.transport is not None and not c.transport.is_closing()
            ),
        }
        if reset:
            s.reset()
        return out

    async def close(self, timeout: float) -> Command:
        clients, self.clients = self.clients, []
        lost = [c.lost for c in clients]
        for c in clients:
            c.close()
        if lost:
            await asyncio.wait(lost, timeout=timeout)
        return {"closed": len(clients)}


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    out = sys.stdout.buffer
    while line := await reader.readline():
        cmd: Command = orjson.loads(line)
        if cmd["cmd"] == "exit":
            await worker.close(5.0)
            break
        try:
            reply = await worker.handle(cmd)
        except Exception as exc:  # boundary: report to the parent instead of dying silently
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(reply) + b"\n")
        out.flush()


def main() -> None:
    raise_nofile()
    uvloop.run(serve())


if __name__ == "__main__":
    main()

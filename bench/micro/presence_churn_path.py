"""relay's own CPU per presence leave+join, at a fixed channel size, without the kernel or the generator.

bench's presence-churn scenario measures joins/s, but what a join costs depends on how many members hear
it, and that depends on the server's scheduling (a leave and the next join run a loop turn apart leave the
churner out of the channel meanwhile). Here the channel size is fixed: `--members` connections sit in one
presence channel through the lean transport's real objects (LeanListener, LeanConnection, Node with the
in-memory adapter, an in-memory stand-in for uvloop's transport); each cycle one of them sends an
unsubscribe and a subscribe as a new user in one read, as bench's churners do, and the loop turns until
its subscription_succeeded is written. CPU time per cycle over `--cycles`, best of `--rounds`.

    PYTHONPATH=. python bench/micro/presence_churn_path.py [--members 50] [--cycles 5000] [--rounds 5] [--profile]

Another commit's relay: PYTHONPATH a directory holding `relay` from its tree and `bench` from this one.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import tempfile
import time

import orjson

from bench.micro.connect_path import HEAD, KEY, FakeTransport
from bench.signing import channel_auth
from bench.wire import subscribe_frame, unsubscribe_frame
from relay.app import build_app
from relay.config import load_config
from relay.transport.listener import LeanListener

SECRET = "s"
CHANNEL = "presence-churn"


def subscribe(socket_id: str, user_id: str) -> bytes:
    channel_data = orjson.dumps({"user_id": user_id, "user_info": {"bench": 1}}).decode()
    return subscribe_frame(CHANNEL, channel_auth(KEY, SECRET, socket_id, CHANNEL, channel_data), channel_data)


UNSUBSCRIBE = unsubscribe_frame(CHANNEL)


class Counting(FakeTransport):
    """FakeTransport that also counts subscription_succeeded frames written to it."""

    __slots__ = ("joined",)

    def __init__(self) -> None:
        super().__init__()
        self.joined = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.joined += data.count(b"pusher_internal:subscription_succeeded")


async def turn_until(transport: Counting, joined: int) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
        if transport.joined >= joined:
            return
    raise AssertionError("no subscription_succeeded")


async def run(members: int, cycles: int, rounds: int, profile: bool) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as file:
        file.write(
            f'[[apps]]\nid = "1"\nkey = "{KEY}"\nsecret = "{SECRET}"\nmax_connections = 1000000\n'
            "max_presence_members = 1000\n"
        )
        file.flush()
        config = load_config(file.name, env={})
    built = build_app(config)
    await built.node.start()
    listener = LeanListener(built.node, config.path, config.max_outbound_buffer, lambda t, b: None, built.http_api)
    transports: list[Counting] = []
    for i in range(members):
        transport = Counting()
        reader = listener()
        reader.connection_made(transport)  # type: ignore[arg-type]
        reader.data_received(HEAD)
        await asyncio.sleep(0)
        transport.protocol.data_received(subscribe(transport.protocol.socket_id, f"user-{i}"))
        await turn_until(transport, 1)
        transports.append(transport)
    await asyncio.sleep(0)
    gc.freeze()
    profiler = cProfile.Profile() if profile else None
    best = float("inf")
    for round_ in range(rounds):
        # Frames made beforehand: the generator's signing is not the server's cost.
        frames = [
            UNSUBSCRIBE + subscribe(transports[n % members].protocol.socket_id, f"churn-{round_}-{n}")
            for n in range(cycles)
        ]
        writes = sum(t.writes for t in transports)
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for n, frame in enumerate(frames):
            transport = transports[n % members]
            transport.protocol.data_received(frame)
            await turn_until(transport, transport.joined + 1)
            await asyncio.sleep(0)  # the member_added's flush to the others
        if profiler is not None:
            profiler.disable()
        elapsed = time.process_time() - started
        writes = sum(t.writes for t in transports) - writes
        best = min(best, elapsed)
        print(f"round {round_}: {elapsed / cycles * 1e6:.1f} us per leave+join, {writes / cycles:.1f} writes each")
    size = len(await built.node.adapter.members("1", CHANNEL))  # type: ignore[arg-type]
    print(f"best: {best / cycles * 1e6:.1f} us per leave+join at {size} members (relay's Python, no socket I/O)")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the churn path")
    args = parser.parse_args()
    import uvloop

    uvloop.run(run(args.members, args.cycles, args.rounds, args.profile))


if __name__ == "__main__":
    main()

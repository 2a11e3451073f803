"""relay's own CPU per connect+subscribe, without the kernel and the event loop's socket work.

Drives the lean transport's real objects (LeanListener, HeadReader, LeanConnection, Node with the in-memory
adapter) with an in-memory stand-in for uvloop's transport: accept, the upgrade head, the 101 and
connection_established, a subscribe to a channel of its own, subscription_succeeded. CPU time per
connection over `--connects`, best of `--rounds`: far steadier than server_costs.py on a shared machine,
so small changes show; server_costs.py says what the whole server (kernel and uvloop included) costs.

    PYTHONPATH=. python bench/micro/connect_path.py [--connects 10000] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import tempfile
import time
from typing import Any

from bench.wire import handshake_request, subscribe_frame
from relay.app import build_app
from relay.config import load_config
from relay.transport.listener import LeanListener

KEY = "bench-key"
HEAD = handshake_request("127.0.0.1", 6001, KEY)


class FakeTransport:
    """What the lean transport calls on uvloop's TCPTransport, writes kept only as a count."""

    __slots__ = ("closing", "peer", "protocol", "writes")

    def __init__(self) -> None:
        self.protocol: Any = None
        self.writes = 0
        self.closing = False
        self.peer = ("127.0.0.1", 40000)

    def write(self, data: bytes) -> None:
        self.writes += 1

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(connects: int, rounds: int, profile: bool) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as file:
        file.write(f'[[apps]]\nid = "1"\nkey = "{KEY}"\nsecret = "s"\nmax_connections = 1000000\n')
        file.flush()
        config = load_config(file.name, env={})
    built = build_app(config)
    await built.node.start()
    listener = LeanListener(built.node, config.path, config.max_outbound_buffer, lambda t, b: None, built.http_api)
    gc.freeze()
    profiler = cProfile.Profile() if profile else None
    best = float("inf")
    for round_ in range(rounds):
        transports = []
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for i in range(connects):
            transport = FakeTransport()
            reader = listener()
            reader.connection_made(transport)  # type: ignore[arg-type]
            reader.data_received(HEAD)
            await asyncio.sleep(0)  # the outbox flushes: 101 + connection_established
            transport.protocol.data_received(subscribe_frame(f"channel-{round_}-{i}"))
            await asyncio.sleep(0)  # subscription_succeeded
            transports.append(transport)
        if profiler is not None:
            profiler.disable()
        elapsed = time.process_time() - started
        assert all(t.writes == 2 for t in transports), "each connection: one write per answer"
        best = min(best, elapsed)
        print(f"round {round_}: {elapsed / connects * 1e6:.1f} us per connect+subscribe")
        for transport in transports:
            transport.protocol.connection_lost(None)
        await asyncio.sleep(0)
    print(f"best: {best / connects * 1e6:.1f} us per connect+subscribe (relay's Python, no kernel, no socket I/O)")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connects", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the connect path")
    args = parser.parse_args()
    import uvloop

    uvloop.run(run(args.connects, args.rounds, args.profile))


if __name__ == "__main__":
    main()

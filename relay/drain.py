"""Paced drain: on SIGTERM, close this node's connections spread over a window instead of all at once.

Every peer closes everything at once on a deploy, so every client of the node reconnects within about a
second and re-authorises every private and presence channel with its app's backend. Here each connection
gets its own moment, uniform over `drain_window`, and is closed then with 4200 (pusher-js reconnects at
once; by then the load balancer, told by /ready, sends it to another node). Presence members closed this
way leave only after a hold (the webhook leave delay): the same user back on another node within it
causes neither member_removed nor member_added.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Final

from relay.node import Node
from relay.protocol import errors

logger = logging.getLogger(__name__)

DRAIN_CODE: Final = errors.RECONNECT_IMMEDIATELY
DRAIN_MESSAGE: Final = "Server is shutting down"
# Connections due within this much of each other are closed in one batch (one wake-up).
BATCH_INTERVAL: Final = 0.05


async def drain(node: Node, window: float, presence_hold: float, rng: random.Random | None = None) -> int:
    """Close every connection of `node` at a random moment within `window` seconds; returns how many.

    The node must already refuse new connections (node.accepting False). Held presence leaves are
    released (and awaited) before returning.
    """
    rng = rng or random.Random()
    node.draining = True
    node.presence_hold = presence_hold
    loop = asyncio.get_running_loop()
    connections = list(node.connections.values())
    due = sorted((rng.uniform(0.0, window), index) for index in range(len(connections)))
    started = loop.time()
    logger.info("draining %d connections over %.1f s", len(connections), window)
    position = 0
    while position < len(due):
        elapsed = loop.time() - started
        wait = due[position][0] - elapsed
        if wait > 0:
            await asyncio.sleep(wait)
            elapsed = loop.time() - started
        while position < len(due) and due[position][0] <= elapsed + BATCH_INTERVAL:
            connection = connections[due[position][1]]
            connection.send(errors.encode_error(DRAIN_CODE, DRAIN_MESSAGE))
            connection.close(DRAIN_CODE, DRAIN_MESSAGE)
            position += 1
    node.close_connections()  # any that were still opening when the drain began
    await node.release_held_leaves(presence_hold + 1.0)
    logger.info("drained %d connections in %.1f s", len(connections), loop.time() - started)
    return len(connections)

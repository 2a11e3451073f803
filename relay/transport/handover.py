"""The one point where the lean transport reaches into aiohttp: giving it a socket that is already open.

`web.BaseRunner.server` (public) is aiohttp's `web.Server`, the protocol factory aiohttp's own listener
uses: each call returns a `RequestHandler`, an `asyncio.Protocol`. Driving that protocol by hand
(`connection_made`, then the bytes already read) is the part aiohttp does not document; it is done here
only, so an aiohttp upgrade that changes it breaks one function, covered by tests/transport.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


class AiohttpHandover:
    """Hands a socket, with the bytes read from it so far, to aiohttp as if its own listener had accepted it."""

    __slots__ = ("_server",)

    def __init__(self, runner: web.BaseRunner) -> None:
        server = runner.server
        if server is None:
            raise RuntimeError("the aiohttp runner is not set up")
        self._server = server

    def __call__(self, transport: asyncio.Transport, buffered: bytes) -> None:
        handler = self._server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buffered:
            handler.data_received(buffered)

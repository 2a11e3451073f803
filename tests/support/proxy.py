"""CuttingProxy: a TCP proxy on loopback that tests use to break client connections the ways networks do.

`drop()` closes every proxied connection at once (both sides see it); `black_hole()` keeps them open
but forwards nothing more in either direction (only timeouts notice); `refuse(True)` closes new
connections as soon as they arrive (the network stays down).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    silent: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class CuttingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0  # accepted so far
        self._refusing = False
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for link in self._links:
            for task in link.tasks:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def drop(self) -> None:
        for link in self._links:
            _close(link.client)
            _close(link.upstream)
        self._links = []

    def black_hole(self) -> None:
        for link in self._links:
            link.silent = True

    def refuse(self, refusing: bool) -> None:
        self._refusing = refusing

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refusing:
            _close(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _close(writer)
            return
        link = _Link(writer, up_writer)
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, link)),
            asyncio.create_task(self._pipe(up_reader, writer, link)),
        ]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if link.silent:
                    continue  # swallowed, as a dead network path would
                writer.write(data)
                await writer.drain()
        if not link.silent:
            _close(link.client)
            _close(link.upstream)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()

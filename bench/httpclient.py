"""A lean keep-alive HTTP/1.1 client on asyncio.Protocol: one request in flight per connection.

aiohttp's client spends more CPU per request than a fast server spends answering it, which would
make the generator the bottleneck of the HTTP API scenarios; this one only frames bytes.
"""

import asyncio
from typing import cast


class HttpConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"HTTP connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        parsed = _parse_response(self.buf)
        if parsed is not None:
            status, body, used, close = parsed
            self.buf = self.buf[used:]
            if close:
                # soketi 1.6.1 answers every API request with `Connection: close`: mark the
                # connection dead before the pool hands it out again.
                self.lost = True
                self.close()
            waiter.set_result((status, body))

    def request(self, data: bytes) -> "asyncio.Future[tuple[int, bytes]]":
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _parse_response(buf: bytes) -> tuple[int, bytes, int, bool] | None:
    """(status, body, bytes consumed, server closes) once a whole response is in `buf`, else None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[:head_end].lower()
    status = int(buf[9:12])
    body_start = head_end + 4
    close = b"\r\nconnection: close" in head
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        length = int(head[i + 17 : j if j >= 0 else len(head)])
        if len(buf) < body_start + length:
            return None
        return status, buf[body_start : body_start + length], body_start + length, close
    if b"\r\ntransfer-encoding: chunked" in head:
        body = b""
        pos = body_start
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(buf[pos:line_end].split(b";")[0], 16)
            if len(buf) < line_end + 2 + size + 2:
                return None
            body += buf[line_end + 2 : line_end + 2 + size]
            pos = line_end + 2 + size + 2
            if size == 0:
                return status, body, pos, close
    return status, b"", body_start, close


class HttpPool:
    """`size` keep-alive connections to one server, handed out one request at a time."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        self.all: list[HttpConnection] = []
        # TCP connections opened so far: the churn a server that closes after each answer costs us.
        self.connects = 0

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await self._connect())

    async def _connect(self) -> HttpConnection:
        _, conn = await asyncio.get_running_loop().create_connection(HttpConnection, self.host, self.port)
        self.connects += 1
        self.all.append(conn)
        return conn

    async def acquire(self) -> HttpConnection:
        conn = await self.idle.get()
        if conn.lost:
            self.all.remove(conn)
            conn = await self._connect()
        return conn

    def release(self, conn: HttpConnection) -> None:
        self.idle.put_nowait(conn)

    def close(self) -> None:
        for conn in self.all:
            conn.close()
        self.all.clear()

"""A byte-level WebSocket client for transport tests: frames are built by hand, so a test can send what a
well-behaved library never would (unmasked frames, bad UTF-8, a request split into single bytes)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from dataclasses import dataclass

from tests.integration.wire import PUSHER_JS_QUERY
from tests.support.timeouts import TIMEOUT

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def upgrade_request(path: str, key: bytes, host: str = "127.0.0.1") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def expected_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame; masked with a random key unless `mask` is False."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass
class ServerFrame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawSocket:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(self) -> tuple[int, dict[str, str]]:
        """Status code and lower-cased headers of the next HTTP response head."""
        async with asyncio.timeout(TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = await self.read_head()
        async with asyncio.timeout(TIMEOUT):
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def read_frame(self) -> ServerFrame:
        async with asyncio.timeout(TIMEOUT):
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "server frames must not be masked"
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(length)
        return ServerFrame(bool(first & 0x80), first & 0x0F, payload)

    async def read_text(self) -> bytes:
        received = await self.read_frame()
        assert received.opcode == TEXT, received
        return received.payload

    async def read_eof(self) -> None:
        """The server closed the TCP connection (after its close frame)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                rest = await self.reader.read()
        except ConnectionResetError:
            return  # our close reply crossed the server's FIN: closed all the same
        assert rest == b"", f"expected EOF, got {rest[:100]!r}"

    def close(self) -> None:
        self.writer.close()


async def open_websocket(port: int, path: str = f"/app/app-key?{PUSHER_JS_QUERY}") -> RawSocket:
    """Upgraded and past the 101 (connection_established not read yet)."""
    sock = await RawSocket.open(port)
    key = base64.b64encode(os.urandom(16))
    await sock.write(upgrade_request(path, key))
    status, headers = await sock.read_head()
    assert status == 101, status
    assert headers["sec-websocket-accept"] == expected_accept(key).decode()
    return sock

"""A floor for server_costs.py's connect+subscribe: uvloop and one small Protocol, answering the upgrade and the
subscribe with canned bytes (no parsing beyond the Sec-WebSocket-Key, no state). What is left of a connect's
cost here is the kernel's and uvloop's; relay's own work is what it costs above this.

    COSTS_SERVER_MODULE=bench.micro.floor_server PYTHONPATH=. python bench/micro/server_costs.py --publishes 0
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
from typing import Any, Final

import uvloop

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ESTABLISHED: Final = (
    b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"123.456\\",\\"activity_timeout\\":120}"}'
)
SUCCEEDED: Final = b'{"event":"pusher_internal:subscription_succeeded","channel":"x","data":"{}"}'
UP: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    return bytes((0x81, n)) + payload if n < 126 else bytes((0x81, 126)) + n.to_bytes(2, "big") + payload


class Canned(asyncio.Protocol):
    __slots__ = ("greeted", "transport")

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.greeted = False

    def data_received(self, data: bytes) -> None:
        if self.greeted:  # any frame: the subscribe
            self.transport.write(text_frame(SUCCEEDED))
            return
        self.greeted = True
        if data.startswith(b"GET /up"):
            self.transport.write(UP)
            self.transport.close()
            return
        start = data.find(b"Sec-WebSocket-Key: ") + 19
        accept = base64.b64encode(hashlib.sha1(data[start : data.find(b"\r\n", start)] + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept
            + b"\r\n\r\n"
            + text_frame(ESTABLISHED)
        )


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Canned, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":  # relay's command line, as server_costs.py starts it: serve --config F --port P
    uvloop.run(serve(int(sys.argv[sys.argv.index("--port") + 1])))

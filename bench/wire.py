"""WebSocket and Pusher bytes the generator sends or looks for: handshake, client frames, event payloads.

Pure functions and constants; no I/O. The receive side lives in subscriber.py because its frame
parser is the hot path and is written inline there.
"""

import base64
import hashlib
from typing import Final

import orjson

# One fixed handshake key for every connection: the server cannot tell, and the expected accept
# value is then computed once instead of per connection.
WS_KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT: Final = base64.b64encode(hashlib.sha1((WS_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

# Marks the publish timestamp inside an event's data string; never occurs in server frames we
# did not publish (channel names and user ids here are chosen not to contain it).
TS_MARK: Final = b"@t="
TS_DIGITS: Final = 16
EVENT_NAME: Final = "bench-event"
EVENT_SIZE: Final = 100


def handshake_request(host: str, port: int, key: str) -> bytes:
    """The HTTP upgrade request pusher-js would send for app `key`."""
    return (
        f"GET /app/{key}?protocol=7&client=js&version=8.6.0&flash=false HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {WS_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A final, masked client frame. The mask key is zero, which RFC 6455 allows and which leaves
    the payload bytes unchanged, so no XOR pass is needed."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def subscribe_frame(channel: str, auth: str = "", channel_data: str = "") -> bytes:
    data: dict[str, str] = {"auth": auth, "channel": channel}
    if channel_data:
        data["channel_data"] = channel_data
    return client_frame(orjson.dumps({"event": "pusher:subscribe", "data": data}))


def unsubscribe_frame(channel: str) -> bytes:
    return client_frame(orjson.dumps({"event": "pusher:unsubscribe", "data": {"channel": channel}}))


PONG_FRAME: Final = client_frame(b'{"event":"pusher:pong","data":{}}')
CLOSE_FRAME: Final = client_frame((1000).to_bytes(2, "big"), OP_CLOSE)


def event_data(now_us: int, seq: int) -> str:
    """An event's data string of EVENT_SIZE bytes carrying the publish time (monotonic µs)."""
    head = f"{TS_MARK.decode()}{now_us:0{TS_DIGITS}d} seq={seq:08d} pad="
    return head + "x" * max(0, EVENT_SIZE - len(head))

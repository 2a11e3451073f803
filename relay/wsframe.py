"""Server-to-client WebSocket frames (RFC 6455 §5.2), built once and written to many sockets."""

from __future__ import annotations

import struct
from typing import Final

_TEXT: Final = 0x81  # FIN + text opcode
_CLOSE: Final = 0x88  # FIN + close opcode


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((opcode, length))
    if length < 65536:
        return struct.pack("!BBH", opcode, 126, length)
    return struct.pack("!BBQ", opcode, 127, length)


def text_frame(payload: bytes) -> bytes:
    """An unmasked text frame (servers never mask) without compression."""
    return _header(_TEXT, len(payload)) + payload


def close_frame(code: int, reason: str) -> bytes:
    body = struct.pack("!H", code) + reason.encode()[:123]  # control frames carry at most 125 bytes
    return _header(_CLOSE, len(body)) + body

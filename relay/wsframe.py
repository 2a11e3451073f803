"""WebSocket frames (RFC 6455 §5): server frames built once and written to many sockets; client frames read.

No extensions are negotiated, so RSV bits are always an error and payloads are never compressed.
"""

from __future__ import annotations

import struct
from typing import Final

try:  # websockets' C unmasking: ~50x faster than the pure-Python XOR on large payloads
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    _apply_mask = None  # type: ignore[assignment]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

# Close codes (RFC 6455 §7.4.1)
NORMAL_CLOSURE: Final = 1000
# Never sent; recorded for connections that ended without a close code (RFC 6455 §7.1.5).
NO_STATUS_RECEIVED: Final = 1005
ABNORMAL_CLOSURE: Final = 1006
PROTOCOL_ERROR: Final = 1002
INVALID_PAYLOAD: Final = 1007
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011

_TEXT: Final = 0x81  # FIN + text opcode
_CLOSE: Final = 0x88  # FIN + close opcode
_PONG: Final = 0x8A  # FIN + pong opcode
_MAX_CONTROL_PAYLOAD: Final = 125


class FrameError(Exception):
    """A client broke the framing rules; the connection ends with close `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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
    body = struct.pack("!H", code) + _truncate_utf8(reason.encode(), _MAX_CONTROL_PAYLOAD - 2)
    return _header(_CLOSE, len(body)) + body


def empty_close_frame() -> bytes:
    """The reply to a close frame that carried no status code (RFC 6455 §5.5.1)."""
    return bytes((_CLOSE, 0))


def pong_frame(payload: bytes) -> bytes:
    """The answer to a client's ping: the same application data (RFC 6455 §5.5.3)."""
    return _header(_PONG, len(payload)) + payload


def _truncate_utf8(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes without cutting a character in two (a close reason must be valid UTF-8)."""
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode()


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    if _apply_mask is not None:
        return _apply_mask(payload, mask)
    length = len(payload)  # pragma: no cover - fallback without the C extension
    if not length:  # pragma: no cover
        return b""
    repeated = (bytes(mask) * (length // 4 + 1))[:length]  # pragma: no cover
    value = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")  # pragma: no cover
    return value.to_bytes(length, "little")  # pragma: no cover


def read_frame(buffer: bytes | bytearray, start: int, limit: int) -> tuple[bool, int, bytes, int] | None:
    """Parse the client frame at `buffer[start:]`: (fin, opcode, unmasked payload, end), or None if incomplete.

    Raises FrameError for what RFC 6455 forbids (1002) and for payloads over `limit` bytes (1009); the
    size is checked from the header, so an oversized frame is refused before it is buffered.
    """
    available = len(buffer) - start
    if available < 2:
        return None
    first = buffer[start]
    second = buffer[start + 1]
    if first & 0x70:
        raise FrameError(PROTOCOL_ERROR, "Reserved bits set without an extension")
    opcode = first & 0x0F
    fin = first & 0x80 != 0
    if opcode >= OP_CLOSE:
        if opcode > OP_PONG:
            raise FrameError(PROTOCOL_ERROR, f"Unknown opcode {opcode}")
        if not fin:
            raise FrameError(PROTOCOL_ERROR, "Fragmented control frame")
    elif opcode > OP_BINARY:
        raise FrameError(PROTOCOL_ERROR, f"Unknown opcode {opcode}")
    if not second & 0x80:
        raise FrameError(PROTOCOL_ERROR, "Client frames must be masked")
    length = second & 0x7F
    head = start + 2
    if length == 126:
        if available < 4:
            return None
        length = int.from_bytes(buffer[head : head + 2], "big")
        head += 2
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(buffer[head : head + 8], "big")
        head += 8
    if opcode >= OP_CLOSE and length > _MAX_CONTROL_PAYLOAD:
        raise FrameError(PROTOCOL_ERROR, "Control frame too long")
    if length > limit:
        raise FrameError(MESSAGE_TOO_BIG, f"Message is larger than {limit} bytes")
    body = head + 4
    end = body + length
    if len(buffer) < end:
        return None
    return fin, opcode, unmask(buffer[body:end], buffer[head:body]), end


def is_valid_close_code(code: int) -> bool:
    """Codes a peer may send in a close frame (RFC 6455 §7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999

"""Envelopes on Redis pub/sub: a fixed header, the routing fields, then the frame untouched.

Header: version, kind, publisher token, four lengths; then app_id, channel, except_socket_id, user_id and
the frame. The token sits at a fixed offset so a node skips its own messages without decoding them.

An event of a recovering channel kept in Redis (lua/cluster/publish_kept.lua) comes as KEPT_VERSION, the
length of its id, its id, then an envelope as above, whose token is NO_TOKEN when every node, the
publisher included, is to deliver it (the publisher did not, because it had no id yet).
"""

from __future__ import annotations

import struct
from typing import Final

from relay.adapters.base import Envelope, EnvelopeKind

WIRE_VERSION: Final = 1
HEADER: Final = struct.Struct("!BB8sHHHH")
TOKEN_SLICE: Final = slice(2, 10)
KEPT_VERSION: Final = 2
NO_TOKEN: Final = bytes(8)


def encode_envelope(envelope: Envelope, token: bytes) -> bytes:
    """The header plus the routing fields; the caller appends the frame as is."""
    app = envelope.app_id.encode()
    channel = envelope.channel.encode()
    skip = envelope.except_socket_id.encode()
    user = envelope.user_id.encode()
    head = HEADER.pack(WIRE_VERSION, envelope.kind, token, len(app), len(channel), len(skip), len(user))
    return b"".join((head, app, channel, skip, user))


def with_token(payload: bytes, token: bytes) -> bytes:
    return payload[: TOKEN_SLICE.start] + token + payload[TOKEN_SLICE.stop :]


def split_kept(payload: bytes) -> tuple[str, bytes]:
    """(event id, envelope payload) of a KEPT_VERSION message."""
    end = 2 + payload[1]
    return payload[2:end].decode(), payload[end:]


def decode_envelope(payload: bytes, event_id: str = "") -> Envelope:
    """ValueError, struct.error or UnicodeDecodeError for a malformed payload."""
    version, kind, _, app_len, channel_len, skip_len, user_len = HEADER.unpack_from(payload)
    if version != WIRE_VERSION:
        raise ValueError(f"unknown envelope version {version}")
    pos = HEADER.size
    app = payload[pos : pos + app_len].decode()
    pos += app_len
    channel = payload[pos : pos + channel_len].decode()
    pos += channel_len
    skip = payload[pos : pos + skip_len].decode()
    pos += skip_len
    user = payload[pos : pos + user_len].decode()
    pos += user_len
    return Envelope(EnvelopeKind(kind), app, channel, payload[pos:], skip, user, event_id=event_id)

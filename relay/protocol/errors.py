"""Pusher error codes and the one encoder of `pusher:error` frames (docs/protocol.md §3)."""

from __future__ import annotations

from typing import Final

import orjson

# 4000-4099: pusher-js gives up; 4100-4199: it backs off 1 s; 4200-4299: it reconnects at once.
APP_DOES_NOT_EXIST: Final = 4001
APP_DISABLED: Final = 4003
OVER_CONNECTION_QUOTA: Final = 4004
PATH_NOT_FOUND: Final = 4005
INVALID_VERSION_FORMAT: Final = 4006
UNSUPPORTED_PROTOCOL_VERSION: Final = 4007
NO_PROTOCOL_VERSION: Final = 4008
CONNECTION_UNAUTHORIZED: Final = 4009
OVER_CAPACITY: Final = 4100
RECONNECT_IMMEDIATELY: Final = 4200
PONG_NOT_RECEIVED: Final = 4201
# Codes >= 4300 are sent as error frames only, never as close codes.
CLIENT_EVENT_REJECTED: Final = 4301
WATCHLIST_LIMIT_EXCEEDED: Final = 4302
# A malformed frame from a client: an error frame only (Reverb uses 4200 the same way).
INVALID_MESSAGE_FORMAT: Final = 4200


class PusherError(Exception):
    """A protocol error answered with a `pusher:error` frame; `close` also ends the connection."""

    def __init__(self, code: int | None, message: str, *, close: bool = False, channel: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.channel = channel


def encode_error(code: int | None, message: str, channel: str = "") -> bytes:
    """`pusher:error` with `data` as an object, as Pusher's docs show (pusher-js accepts either form)."""
    frame: dict[str, object] = {"event": "pusher:error", "data": {"code": code, "message": message}}
    if channel:
        frame["channel"] = channel
    return orjson.dumps(frame)

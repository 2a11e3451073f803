"""Limits both WebSocket transports apply alike."""

from typing import Final

# Both transports close with 1009 above this; below it, oversize messages get a pusher:error and the socket stays.
HARD_MESSAGE_LIMIT_FACTOR: Final = 8

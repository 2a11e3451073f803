"""The WebSocket transports: the lean protocol on the raw socket (relay.transport.lean, the default for
`relay serve`) and aiohttp's WebSocketResponse (embedded use, `transport = "aiohttp"`), sharing the
handshake checks and the outbound coalescing."""

from relay.transport.aiohttp_endpoint import WebSocketEndpoint

__all__ = ["WebSocketEndpoint"]

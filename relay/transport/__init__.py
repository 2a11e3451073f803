"""The WebSocket transports: aiohttp's WebSocketResponse, and the shared handshake and coalescing pieces."""

from relay.transport.aiohttp_endpoint import WebSocketEndpoint

__all__ = ["WebSocketEndpoint"]

"""The WebSocket transports, both in front of one aiohttp application (relay.server builds them).

The lean transport (the default for `relay serve`) works on the raw asyncio socket:
    listener.py    LeanListener and HeadReader: the first request head decides who serves the socket.
    websocket.py   LeanConnection: the node's Connection and the frame reader of an upgraded socket.
    http_fast.py   FastHttp: signed publishes answered without aiohttp; heads parsed in http_head.py.
    handover.py    The one hand-over point into aiohttp, for every other request.
    tasks.py       The tasks in flight, awaited at shutdown.
aiohttp_endpoint.py serves WebSockets through aiohttp's WebSocketResponse (`transport = "aiohttp"`, and
embedded use). Both share handshake.py (upgrade checks), outbox.py (coalesced writes) and limits.py.
"""

from relay.transport.aiohttp_endpoint import WebSocketEndpoint

__all__ = ["WebSocketEndpoint"]

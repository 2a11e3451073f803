"""The WebSocket opening handshake (RFC 6455 §4.2) and the connection-level refusals (docs/protocol.md §1.1, §3).

Pure functions over bytes and strings, shared by the aiohttp endpoint and the lean protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from relay.config import AppConfig
from relay.metrics import NO_APP, Metrics
from relay.protocol import errors

logger = logging.getLogger(__name__)

MIN_PROTOCOL: Final = 4
MAX_PROTOCOL: Final = 7
# Larger request heads are answered 431 before the connection is handed to aiohttp.
MAX_HEAD_SIZE: Final = 8192
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Header lines: a name that neither starts nor ends with a space or tab, a colon, then anything.
_HEADER_BLOCK: Final = re.compile(
    rb"[^ \t:\r\n](?:[^:\r\n]*[^ \t:\r\n])?:[^\r\n]*(?:\r\n[^ \t:\r\n](?:[^:\r\n]*[^ \t:\r\n])?:[^\r\n]*)*"
)
_WANTED_HEADER: Final = re.compile(
    rb"\r\n(upgrade|connection|sec-websocket-version|sec-websocket-key|origin|x-forwarded-for):([^\r\n]*)",
    re.IGNORECASE,
)

# Headers that may be repeated: their values are joined with commas (RFC 9110 §5.3).
_LIST_HEADERS: Final = (b"connection", b"x-forwarded-for")

HEAD_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: application/json\r\nContent-Length: 43\r\nConnection: close\r\n\r\n"
    b'{"error":"Request header fields too large"}'
)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us more, on every connect
class UpgradeRequest:
    """A valid WebSocket upgrade to `{path}/app/{key}`."""

    key: str  # the app key, from the path
    protocol: str | None  # the `protocol` query parameter (docs/protocol.md §1.1)
    origin: str
    accept: bytes  # Sec-WebSocket-Accept for the response
    query: str = ""  # the raw query string, for Node.open (a token at connect)
    forwarded_for: str | None = None  # X-Forwarded-For, believed only from trusted proxies (relay.admission)


def accept_key(websocket_key: bytes) -> bytes:
    """Sec-WebSocket-Accept: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(websocket_key + _GUID).digest())


def switching_protocols(accept: bytes) -> bytes:
    """The 101 response; no extension and no subprotocol is ever selected."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + accept
        + b"\r\n\r\n"
    )


def may_be_upgrade(request_line: bytes, app_path: bytes) -> bool:
    """Whether the request line could start an upgrade to `{path}/app/...`; if not, aiohttp gets it at once."""
    return request_line.startswith(b"GET " + app_path) and request_line.endswith(b" HTTP/1.1")


def parse_upgrade(head: bytes, app_path: str) -> UpgradeRequest | None:
    """The upgrade in a complete request head (without its final blank line), or None for anything else.

    None means "not ours": aiohttp answers it, with the same errors (400, 404, 4005) it gives today.
    `app_path` is `{config.path}/app/`.
    """
    request_line, _, block = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
        return None
    # Checked by regular expressions (in C): a loop over a browser's dozen header lines cost ~2 us each.
    if block and _HEADER_BLOCK.fullmatch(block) is None:
        return None  # obsolete folding or a malformed line: aiohttp's parser answers 400
    headers: dict[bytes, bytes] = {}
    for raw_name, raw_value in _WANTED_HEADER.findall(b"\r\n" + block):
        name = raw_name.lower()
        value = raw_value.strip()
        if name in headers:
            if name not in _LIST_HEADERS:
                return None
            headers[name] += b"," + value
        else:
            headers[name] = value
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        return None
    connection = headers.get(b"connection", b"").lower()
    if connection != b"upgrade" and b"upgrade" not in [token.strip() for token in connection.split(b",")]:
        return None
    if headers.get(b"sec-websocket-version") != b"13":
        return None
    websocket_key = headers.get(b"sec-websocket-key", b"")
    try:
        if len(base64.b64decode(websocket_key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    target = parts[1].decode("latin-1")
    path, _, query = target.partition("?")
    if not path.startswith(app_path):
        return None
    raw_key = path[len(app_path) :]
    if not raw_key or "/" in raw_key:
        return None
    protocol = _query_parameter(query, "protocol")
    return UpgradeRequest(
        key=unquote(raw_key),
        protocol=protocol,
        origin=headers.get(b"origin", b"").decode("latin-1"),
        accept=accept_key(websocket_key),
        query=query,
        forwarded_for=headers[b"x-forwarded-for"].decode("latin-1") if b"x-forwarded-for" in headers else None,
    )


def _query_parameter(query: str, wanted: str) -> str | None:
    """The first `wanted` value of a query string as parse_qsl reads it, without its cost when nothing is escaped."""
    if "%" in query or "+" in query:
        return next((value for name, value in parse_qsl(query, keep_blank_values=True) if name == wanted), None)
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == wanted:
            return value
    return None


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Reverb's rule: `*`, or a host pattern (`*.example.com`) matching the Origin header's host."""
    if not origin or "*" in allowed:
        return True
    host = urlsplit(origin).hostname or ""
    return any(fnmatch.fnmatchcase(host, pattern) or origin == pattern for pattern in allowed)


# The `reason` label of relay_connections_refused_total for each refusal code.
REFUSAL_REASONS: Final = {
    errors.APP_DOES_NOT_EXIST: "unknown_app",
    errors.APP_DISABLED: "app_disabled",
    errors.NO_PROTOCOL_VERSION: "protocol",
    errors.INVALID_VERSION_FORMAT: "protocol",
    errors.UNSUPPORTED_PROTOCOL_VERSION: "protocol",
    errors.CONNECTION_UNAUTHORIZED: "origin",
}


def count_refusal(metrics: Metrics, app: AppConfig | None, code: int) -> None:
    metrics.app(app.id if app is not None else NO_APP).refused(REFUSAL_REASONS.get(code, "other"))


def refusal(app: AppConfig | None, key: str, protocol: str | None, origin: str) -> tuple[int, str] | None:
    """Connection-level errors, checked before the session exists (docs/protocol.md §1.1, §3)."""
    if app is None:
        return errors.APP_DOES_NOT_EXIST, f"Application does not exist: {key[:100]}"
    if not app.enabled:
        return errors.APP_DISABLED, "Application is disabled"
    if protocol is None or protocol == "":
        return errors.NO_PROTOCOL_VERSION, "No protocol version supplied"
    if not (protocol.isascii() and protocol.isdigit()):
        return errors.INVALID_VERSION_FORMAT, f"Invalid version string format: {protocol[:32]}"
    if not MIN_PROTOCOL <= int(protocol) <= MAX_PROTOCOL:
        return errors.UNSUPPORTED_PROTOCOL_VERSION, f"Unsupported protocol version: {protocol}"
    if not origin_allowed(origin, app.allowed_origins):
        return errors.CONNECTION_UNAUTHORIZED, "Origin not allowed"
    return None


# What a refused connect is told: pusher-js answers 4100 by trying again after a pause.
RATE_LIMITED_MESSAGE: Final = "Too many new connections; try again shortly"


def count_rate_limited(metrics: Metrics, app: AppConfig, reason: str) -> None:
    logger.warning("connection refused: %s", reason.replace("_", " "), extra={"app_id": app.id, "reason": reason})
    metrics.app(app.id).refused(reason)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The socket peer's IP address ("" for a Unix socket or when the peer is gone)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""

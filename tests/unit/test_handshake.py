"""relay.transport.handshake: the upgrade request (RFC 6455 §4.2) and the connection-level refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.config import AppConfig
from relay.protocol import errors
from relay.transport.handshake import (
    accept_key,
    may_be_upgrade,
    origin_allowed,
    parse_upgrade,
    refusal,
    switching_protocols,
)

APP_PATH = "/app/"
NONCE = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key


def head(target: str = "/app/app-key?protocol=7&client=js&version=8.6.0&flash=false", **overrides: str | None) -> bytes:
    headers: dict[str, str | None] = {
        "Host": "127.0.0.1:8080",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": NONCE,
        "Sec-WebSocket-Version": "13",
        "Origin": "http://example.com",
    }
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    lines = [f"GET {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.items() if value is not None]
    return "\r\n".join(lines).encode()


def test_accept_key_rfc_example() -> None:
    assert accept_key(NONCE.encode()) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_switching_protocols_response() -> None:
    response = switching_protocols(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Extensions" not in response  # never compressed


def test_parse_pusher_js_upgrade() -> None:
    upgrade = parse_upgrade(head(), APP_PATH)
    assert upgrade is not None
    assert upgrade.key == "app-key"
    assert upgrade.protocol == "7"
    assert upgrade.origin == "http://example.com"
    assert upgrade.accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_is_lenient_where_rfc_allows() -> None:
    upgrade = parse_upgrade(
        head(Upgrade="WebSocket", Connection="keep-alive, Upgrade", Origin=None).replace(b"Upgrade:", b"upgrade:"),
        APP_PATH,
    )
    assert upgrade is not None
    assert upgrade.origin == ""
    assert parse_upgrade(head(target="/app/my%20key"), APP_PATH).key == "my key"  # type: ignore[union-attr]
    no_query = parse_upgrade(head(target="/app/app-key"), APP_PATH)
    assert no_query is not None and no_query.protocol is None
    empty = parse_upgrade(head(target="/app/app-key?protocol="), APP_PATH)
    assert empty is not None and empty.protocol == ""


def test_parse_with_path_prefix() -> None:
    assert parse_upgrade(head(target="/ws/app/app-key?protocol=7"), "/ws/app/") is not None
    assert parse_upgrade(head(target="/app/app-key?protocol=7"), "/ws/app/") is None


@pytest.mark.parametrize(
    "request_head",
    [
        head().replace(b"GET ", b"POST ", 1),
        head().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        head(Upgrade=None),
        head(Upgrade="h2c"),
        head(Connection="keep-alive"),
        head(Connection=None),
        head(Sec_WebSocket_Version="8"),
        head(Sec_WebSocket_Version=None),
        head(Sec_WebSocket_Key=None),
        head(Sec_WebSocket_Key="too-short"),
        head(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),  # 21 bytes decoded
        head(Sec_WebSocket_Key="not base64 at all!!!===="),
        head(target="/apps/app-key"),
        head(target="/app/"),
        head(target="/app/a/b"),
        head(target="/"),
        head() + b"\r\n folded: continuation",
        head() + b"\r\nno colon here",
        head() + b"\r\nUpgrade: websocket",  # a repeated header (other than Connection)
        b"GET /app/app-key",
    ],
    ids=[
        "post", "http-1.0", "no-upgrade", "upgrade-h2c", "connection-no-upgrade", "no-connection", "version-8",
        "no-version", "no-key", "short-key", "long-key", "key-not-base64", "apps-path", "empty-key", "key-slash",
        "root", "folded-header", "malformed-line", "duplicate-header", "no-headers",
    ],
)  # fmt: skip
def test_not_an_upgrade_for_us(request_head: bytes) -> None:
    assert parse_upgrade(request_head, APP_PATH) is None


def test_may_be_upgrade() -> None:
    assert may_be_upgrade(b"GET /app/key?protocol=7 HTTP/1.1", b"/app/")
    assert not may_be_upgrade(b"GET /up HTTP/1.1", b"/app/")
    assert not may_be_upgrade(b"POST /app/key HTTP/1.1", b"/app/")
    assert not may_be_upgrade(b"GET /app/key HTTP/1.0", b"/app/")


APP = AppConfig(id="1", key="k", secret="s")


@pytest.mark.parametrize(
    ("app", "protocol", "origin", "code"),
    [
        (None, "7", "", errors.APP_DOES_NOT_EXIST),
        (replace(APP, enabled=False), "7", "", errors.APP_DISABLED),
        (APP, None, "", errors.NO_PROTOCOL_VERSION),
        (APP, "", "", errors.NO_PROTOCOL_VERSION),
        (APP, "seven", "", errors.INVALID_VERSION_FORMAT),
        (APP, "7.0", "", errors.INVALID_VERSION_FORMAT),
        (APP, "\u0667", "", errors.INVALID_VERSION_FORMAT),  # a non-ASCII digit
        (APP, "3", "", errors.UNSUPPORTED_PROTOCOL_VERSION),
        (APP, "8", "", errors.UNSUPPORTED_PROTOCOL_VERSION),
        (replace(APP, allowed_origins=("*.example.com",)), "7", "https://evil.test", errors.CONNECTION_UNAUTHORIZED),
        # Order: an unknown or disabled app is reported before a bad protocol or origin.
        (None, None, "https://evil.test", errors.APP_DOES_NOT_EXIST),
        (replace(APP, enabled=False, allowed_origins=("a.test",)), "1", "https://b.test", errors.APP_DISABLED),
    ],
)
def test_refusal_codes(app: AppConfig | None, protocol: str | None, origin: str, code: int) -> None:
    refused = refusal(app, "k", protocol, origin)
    assert refused is not None and refused[0] == code and refused[1]


@pytest.mark.parametrize("protocol", ["4", "5", "6", "7"])
def test_supported_protocols_accepted(protocol: str) -> None:
    assert refusal(APP, "k", protocol, "https://anything.test") is None


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        ("https://app.example.com", ("*",), True),
        ("", ("app.example.com",), True),  # no Origin header: not a browser
        ("https://app.example.com", ("app.example.com",), True),
        ("https://app.example.com:8443", ("app.example.com",), True),
        ("https://a.b.example.com", ("*.example.com",), True),
        ("https://example.com", ("*.example.com",), False),
        ("https://evil.test", ("app.example.com",), False),
        ("https://app.example.com.evil.test", ("app.example.com",), False),
        ("https://app.example.com", ("https://app.example.com",), True),
        ("null", ("app.example.com",), False),
    ],
)
def test_origin_allowed(origin: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert origin_allowed(origin, allowed) is ok

"""HMAC-SHA256 signatures: channel auth, user sign-in, HTTP API requests, webhooks (docs/protocol.md §5-7).

Pure functions with constant-time comparisons; callers pass the key and secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def hmac_hex(secret: str, message: str | bytes) -> str:
    payload = message.encode() if isinstance(message, str) else message
    # hmac.digest is OpenSSL's one-shot HMAC: no Python HMAC object per call (HTTP API hot path).
    return hmac.digest(secret.encode(), payload, "sha256").hex()


def channel_auth(key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    to_sign = f"{socket_id}:{channel}" if channel_data is None else f"{socket_id}:{channel}:{channel_data}"
    return f"{key}:{hmac_hex(secret, to_sign)}"


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    return f"{key}:{hmac_hex(secret, f'{socket_id}::user::{user_data}')}"


def verify_channel_auth(
    key: str, secret: str, socket_id: str, channel: str, auth: str, channel_data: str | None
) -> bool:
    """Compares the whole `key:signature` string, over the exact channel_data bytes received."""
    expected = channel_auth(key, secret, socket_id, channel, channel_data)
    return hmac.compare_digest(expected.encode(), auth.encode())


def verify_user_auth(key: str, secret: str, socket_id: str, user_data: str, auth: str) -> bool:
    return hmac.compare_digest(user_auth(key, secret, socket_id, user_data).encode(), auth.encode())


def query_to_sign(params: Iterable[tuple[str, str]]) -> str:
    """`k=v&…`: every decoded query param but auth_signature, keys lowercased, sorted."""
    pairs = sorted((key.lower(), value) for key, value in params if key != "auth_signature")
    return "&".join(f"{key}={value}" for key, value in pairs)


def request_string_to_sign(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    """`METHOD\\npath\\nk=v&…` (see query_to_sign)."""
    return f"{method.upper()}\n{path}\n{query_to_sign(params)}"


def sign_request(secret: str, method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    return hmac_hex(secret, request_string_to_sign(method, path, params))


def verify_request_signature(
    secret: str, method: str, path: str, params: Iterable[tuple[str, str]], signature: str
) -> bool:
    expected = sign_request(secret, method, path, params)
    return hmac.compare_digest(expected.encode(), signature.encode())


def verify_request_signature_any(
    secret: str, method: str, paths: Iterable[str], params: Iterable[tuple[str, str]], signature: str
) -> bool:
    """verify_request_signature for the first of `paths` that matches; the query is sorted once."""
    key = secret.encode()
    given = signature.encode()
    head = method.upper()
    query = query_to_sign(params)
    for path in paths:
        expected = hmac.digest(key, f"{head}\n{path}\n{query}".encode(), "sha256").hex()
        if hmac.compare_digest(expected.encode(), given):
            return True
    return False


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def sign_webhook(secret: str, body: bytes) -> str:
    """`X-Pusher-Signature`: HMAC-SHA256 of the exact body bytes sent."""
    return hmac_hex(secret, body)


class AppVerifier:
    """The protocol core's Verifier for one app."""

    __slots__ = ("_key", "_secret")

    def __init__(self, key: str, secret: str) -> None:
        self._key = key
        self._secret = secret

    def channel_auth_ok(self, socket_id: str, channel: str, auth: str, channel_data: str | None) -> bool:
        return verify_channel_auth(self._key, self._secret, socket_id, channel, auth, channel_data)

    def signin_ok(self, socket_id: str, user_data: str, auth: str) -> bool:
        return verify_user_auth(self._key, self._secret, socket_id, user_data, auth)

"""Test tokens and keys: PyJWT-made tokens, `jose`-made tokens (npm, an independent implementation), key
pairs made with cryptography, and a real local JWKS server whose behaviour a test can switch."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.timeouts import scaled

JOSE_TOKEN_SCRIPT: Final = Path(__file__).parents[1] / "clients" / "js" / "jose_token.mjs"
# 32 bytes or more: PyJWT warns about shorter HMAC keys.
JWT_SECRET: Final = "jwt-secret-for-app-1001-at-least-32-bytes"
OTHER_APP_JWT_SECRET: Final = "jwt-secret-for-app-1002-at-least-32-bytes"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    jwk: dict[str, Any]  # the public key as a JWK, without kid/alg


def _pems(private: Any) -> tuple[str, str]:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def _key_pair(private: Any, algorithm: str) -> KeyPair:
    private_pem, public_pem = _pems(private)
    implementation = jwt.algorithms.get_default_algorithms()[algorithm]
    jwk = json.loads(implementation.to_jwk(private.public_key()))
    return KeyPair(private_pem, public_pem, jwk)


def rsa_pair() -> KeyPair:
    return _key_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


def ec_pair() -> KeyPair:
    return _key_pair(ec.generate_private_key(ec.SECP256R1()), "ES256")


def ed25519_pair() -> KeyPair:
    return _key_pair(ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def claims(sub: Any = "42", lifetime: float = 300, **extra: Any) -> dict[str, Any]:
    """Typical claims: sub, iat, exp and `allow` for the channels most tests use; a None value drops a claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "exp": now + int(lifetime),
        "allow": ["private-user.42", "presence-room.*", "private-encrypted-inbox.42"],
        "user_info": {"name": "Ada"},
    }
    payload.update(extra)
    return {name: value for name, value in payload.items() if value is not None}


def pyjwt_token(payload: Mapping[str, Any], key: str = JWT_SECRET, algorithm: str = "HS256", **headers: Any) -> str:
    return jwt.encode(dict(payload), key, algorithm=algorithm, headers=headers or None)


def jose_token(payload: Mapping[str, Any], key: str = JWT_SECRET, algorithm: str = "HS256", kid: str = "") -> str:
    """A token signed by the npm `jose` library (Node), with an HMAC secret or a PKCS#8 PEM private key."""
    params = {"payload": dict(payload), "key": key, "alg": algorithm, "kid": kid}
    result = subprocess.run(
        ["node", str(JOSE_TOKEN_SCRIPT), json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 0, f"jose_token.mjs failed: {result.stderr}"
    return result.stdout.strip()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned_token(payload: Mapping[str, Any]) -> str:
    """`alg: none`, built by hand: PyJWT refuses to make one for a key."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(dict(payload)).encode())}."


def tampered(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with `changes` applied."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(changes)
    return f"{header}.{b64url(json.dumps(decoded).encode())}.{signature}"


@dataclass
class JwksServer:
    """A real HTTP server publishing a JWKS; `mode` is "ok", "error" (HTTP 500) or "slow" (answers late)."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"
    delay: float = 10.0
    requests: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.mode == "error":
            return web.json_response({"error": "down"}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        return web.json_response({"keys": self.keys})


@asynccontextmanager
async def jwks_server(*keys: dict[str, Any]) -> AsyncIterator[JwksServer]:
    server = JwksServer(list(keys))
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()

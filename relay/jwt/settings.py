"""The `[apps.jwt]` table (`RELAY_APP_JWT_<FIELD>` for the environment app) and its start-up checks.

Declared here rather than in relay.config so the JWT feature stays in one package; relay.config nests it in
AppConfig and builds it like any other settings table. Imports nothing from relay.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from jwt.algorithms import get_default_algorithms

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class JwtSettings:
    # Exactly one key source: an HMAC secret (HS256), a PEM public key, or a JWKS URL.
    secret: str = ""
    public_key: str = ""
    jwks_url: str = ""
    # Accepted `alg` values, pinned; empty means HS256 with `secret`, RS256 with `public_key` or `jwks_url`.
    algorithms: tuple[str, ...] = ()
    # Required `iss` and `aud` values; empty means the claim is not checked.
    issuer: str = ""
    audience: str = ""
    # Seconds of clock difference tolerated on exp, nbf and iat.
    leeway: float = 10.0
    # The WebSocket URL's query parameter that carries a token at connect.
    query_parameter: str = "token"
    # The app's encryption master key (base64, 32 bytes), for the shared_secret of private-encrypted-
    # channels; without it the auth endpoint refuses those channels.
    encryption_master_key_base64: str = ""
    # Seconds a fetched JWKS is trusted; an unknown `kid` refetches sooner (at most every jwks_min_refresh).
    jwks_lifespan: float = 300.0
    jwks_min_refresh: float = 10.0
    # Seconds a JWKS fetch may take before it fails (the token is refused as unverifiable).
    jwks_timeout: float = 3.0

    @property
    def pinned_algorithms(self) -> tuple[str, ...]:
        if self.algorithms:
            return self.algorithms
        return ("HS256",) if self.secret else ("RS256",)


def settings_problem(settings: JwtSettings) -> str:
    """What is wrong with `settings` as `<field>: why`, or "" when nothing is."""
    sources = [name for name in ("secret", "public_key", "jwks_url") if getattr(settings, name)]
    if len(sources) != 1:
        return "secret: set exactly one of secret, public_key or jwks_url"
    algorithms = settings.pinned_algorithms
    for algorithm in algorithms:
        if algorithm not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
            known = ", ".join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
            return f"algorithms: {algorithm!r} is not accepted; choose from {known}"
        # Pinning by key source is what makes algorithm confusion impossible: a public key is never an HMAC secret.
        if settings.secret and algorithm not in HMAC_ALGORITHMS:
            return f"algorithms: {algorithm} needs public_key or jwks_url, not secret"
        if not settings.secret and algorithm in HMAC_ALGORITHMS:
            return f"algorithms: {algorithm} needs secret, not a public key"
    if settings.jwks_url and not settings.jwks_url.startswith(("http://", "https://")):
        return f"jwks_url: must be an http:// or https:// URL, got {settings.jwks_url!r}"
    if settings.public_key:
        problem = _public_key_problem(settings.public_key, algorithms)
        if problem:
            return f"public_key: {problem}"
    if settings.encryption_master_key_base64 and len(_base64(settings.encryption_master_key_base64)) != 32:
        return "encryption_master_key_base64: must be 32 bytes, base64-encoded"
    if not settings.query_parameter:
        return "query_parameter: must not be empty"
    if settings.jwks_timeout <= 0:
        return "jwks_timeout: must be more than 0"
    return ""


def _public_key_problem(pem: str, algorithms: tuple[str, ...]) -> str:
    available = get_default_algorithms()
    for algorithm in algorithms:
        implementation = available.get(algorithm)
        if implementation is None:
            return f"{algorithm} is unavailable (is the cryptography package installed?)"
        try:
            implementation.prepare_key(pem)
        except Exception as error:  # PyJWT raises several types for a key of the wrong kind
            return f"not a PEM public key for {algorithm} ({type(error).__name__})"
    return ""


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return b""

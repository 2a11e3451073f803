"""TokenVerifier: one app's JWT checks with PyJWT (pinned algorithms, exp/nbf/iat, iss, aud) and its claims.

Every refusal is a TokenRejected naming the check that failed; the token itself is never echoed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt
import orjson
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms

from relay.jwt.rejection import TokenRejected
from relay.jwt.settings import JwtSettings
from relay.protocol.ids import UserId

# Larger tokens are refused before any parsing (a WebSocket request head is at most 8 KB anyway).
MAX_TOKEN_SIZE: Final = 4096
# The protocol core's limit on user ids.
MAX_USER_ID_LENGTH: Final = 128
REQUIRED_CLAIMS: Final = ("exp", "sub")

# PyJWT's exceptions, most specific first (InvalidSignatureError is a DecodeError, for one).
_PYJWT_REFUSALS: Final[tuple[tuple[type[jwt.PyJWTError], str, str], ...]] = (
    (jwt.ExpiredSignatureError, "expired", "The token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "The token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidIssuerError, "wrong_issuer", "The token's issuer is not the expected one"),
    (jwt.InvalidAudienceError, "wrong_audience", "The token's audience is not the expected one"),
    (jwt.InvalidIssuedAtError, "invalid_claim", "The token's iat claim is not a number"),
    (jwt.InvalidSignatureError, "bad_signature", "The token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed", "The token's algorithm does not fit the key"),
    (jwt.InvalidKeyError, "bad_signature", "The token's signature does not verify"),
    (jwt.DecodeError, "malformed", "The token is not a well-formed JWT"),
)


class KeySource(Protocol):
    async def key_for(self, kid: str | None, algorithm: str) -> PyJWK | Any:
        """The verification key for a token with this `kid` header and (allowed) `alg`."""


class StaticKeys:
    """The configured secret or PEM public key, prepared once per pinned algorithm."""

    def __init__(self, settings: JwtSettings) -> None:
        material = settings.secret or settings.public_key
        available = get_default_algorithms()
        self._keys = {name: available[name].prepare_key(material) for name in settings.pinned_algorithms}

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        return self._keys[algorithm]


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What relay uses of a verified token."""

    user_id: UserId  # `sub`, as a string
    user_info: Any  # `user_info`, or None
    allow: tuple[str, ...]  # `allow`, empty when absent


class TokenVerifier:
    def __init__(self, settings: JwtSettings, keys: KeySource) -> None:
        self.settings = settings
        self._keys = keys
        self._algorithms = frozenset(settings.pinned_algorithms)
        self._options: Any = {
            "require": [
                *REQUIRED_CLAIMS,
                *(["iss"] if settings.issuer else []),
                *(["aud"] if settings.audience else []),
            ],
            "verify_aud": bool(settings.audience),
            # Laravel's JWT packages put integer user ids in `sub`; checked below instead (string or integer).
            "verify_sub": False,
        }

    async def verify(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_SIZE:
            raise TokenRejected("token_too_large", f"The token is larger than {MAX_TOKEN_SIZE} bytes")
        header = unverified_header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            # Refuses `none` and, with a public key configured, every HS* token (algorithm confusion).
            allowed = ", ".join(sorted(self._algorithms))
            raise TokenRejected("algorithm_not_allowed", f"The token's algorithm is not allowed (expected {allowed})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed", "The token's kid header is not a string")
        key = await self._keys.key_for(kid, algorithm)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options=self._options,
                issuer=self.settings.issuer or None,
                audience=self.settings.audience or None,
                leeway=self.settings.leeway,
            )
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected("missing_claim", f"The token has no {error.claim} claim") from None
        except jwt.PyJWTError as error:
            for kind, check, message in _PYJWT_REFUSALS:
                if isinstance(error, kind):
                    raise TokenRejected(check, message) from None
            raise TokenRejected("invalid", "The token is not valid") from None
        return claims_of(payload)


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read only to choose the key: PyJWT checks the whole token again when it verifies.

    jwt.get_unverified_header validates every base64 character of the payload too, in Python: reading the
    header alone halves the cost of an auth request.
    """
    segment = token.partition(".")[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):  # orjson.JSONDecodeError is a ValueError
        raise TokenRejected("malformed", "The token is not a well-formed JWT") from None
    if not isinstance(header, dict) or token.count(".") != 2:
        raise TokenRejected("malformed", "The token is not a well-formed JWT")
    return header


def claims_of(payload: Mapping[str, Any]) -> TokenClaims:
    user_id = _user_id(payload.get("sub"))
    if user_id is None:
        raise TokenRejected("invalid_claim", "The token's sub claim must be a non-empty string or an integer")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise TokenRejected("invalid_claim", f"The token's sub claim is longer than {MAX_USER_ID_LENGTH} characters")
    allow = payload.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(entry, str) for entry in allow):
        raise TokenRejected("invalid_claim", "The token's allow claim must be a list of channel names and patterns")
    return TokenClaims(UserId(user_id), payload.get("user_info"), tuple(allow))


def _user_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int):
        return json.dumps(value)
    return None

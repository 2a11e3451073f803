"""The security suite: every way a token can be wrong is refused with the status and `check` naming the
failed check, never echoing the token. Tokens come from PyJWT, from hand-built bytes, and from the npm
`jose` library (an independent implementation), against HS256, a PEM public key and a real JWKS server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from relay.jwt.authority import TokenAuthority
from relay.jwt.rejection import TokenRejected
from relay.metrics import Metrics
from tests.integration.wire import wait_until
from tests.jwt.conftest import AuthClient, with_jwt
from tests.jwt.tokens import (
    JWT_SECRET,
    OTHER_APP_JWT_SECRET,
    KeyPair,
    b64url,
    claims,
    ec_pair,
    ed25519_pair,
    jose_token,
    jwks_server,
    pyjwt_token,
    rsa_pair,
    tampered,
    unsigned_token,
)
from tests.support.inprocess import RelayServerFactory
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(60)

SOCKET_ID = "123.456"
CHANNEL = "private-user.42"


@pytest.fixture(scope="module")
def rsa_key() -> KeyPair:
    return rsa_pair()


async def assert_refused(auth: AuthClient, token: str, status: int, check: str) -> dict[str, Any]:
    got_status, body = await auth.channel(token, SOCKET_ID, CHANNEL)
    assert (got_status, body.get("check")) == (status, check), body
    assert token not in json.dumps(body)
    return dict(body)


# HS256 app -------------------------------------------------------------------------------------


def _hs256_cases() -> dict[str, tuple[Callable[[], str], str]]:
    """Each case's token is made when its test runs: made at collection, a token would expire before a
    long suite reached it, and every case would answer 'expired'."""
    return {
        "expired": (lambda: pyjwt_token(claims(exp=int(time.time()) - 60)), "expired"),
        "nbf_in_the_future": (lambda: pyjwt_token(claims(nbf=int(time.time()) + 600)), "not_yet_valid"),
        "iat_in_the_future": (lambda: pyjwt_token(claims(iat=int(time.time()) + 600)), "not_yet_valid"),
        "alg_none": (lambda: unsigned_token(claims()), "algorithm_not_allowed"),
        "alg_none_with_a_signature_part": (
            lambda: unsigned_token(claims()) + pyjwt_token(claims()).split(".")[2],
            "algorithm_not_allowed",
        ),
        "alg_hs512_not_pinned": (lambda: pyjwt_token(claims(), algorithm="HS512"), "algorithm_not_allowed"),
        "tampered_sub": (lambda: tampered(pyjwt_token(claims()), sub="1"), "bad_signature"),
        "tampered_allow": (lambda: tampered(pyjwt_token(claims()), allow=["*"]), "bad_signature"),
        "another_apps_token": (lambda: pyjwt_token(claims(), key=OTHER_APP_JWT_SECRET), "bad_signature"),
        "missing_sub": (lambda: pyjwt_token(claims(sub=None)), "missing_claim"),
        "missing_exp": (lambda: pyjwt_token(claims(exp=None)), "missing_claim"),
        "empty_sub": (lambda: pyjwt_token(claims(sub="")), "invalid_claim"),
        "boolean_sub": (lambda: pyjwt_token(claims(sub=True)), "invalid_claim"),
        "allow_not_a_list": (lambda: pyjwt_token(claims(allow="private-user.42")), "invalid_claim"),
        "oversize": (lambda: pyjwt_token(claims(padding="x" * 5000)), "token_too_large"),
        "not_a_jwt": (lambda: "not.a.jwt", "malformed"),
        "garbage": (lambda: "%%%", "malformed"),
        "jose_expired": (lambda: jose_token(claims(exp=int(time.time()) - 60)), "expired"),
        "jose_another_apps_token": (lambda: jose_token(claims(), key=OTHER_APP_JWT_SECRET), "bad_signature"),
    }


HS256_CASES = _hs256_cases()


@pytest.mark.parametrize("case", sorted(HS256_CASES))
async def test_hs256_app_refuses_bad_tokens_with_401(auth: AuthClient, case: str) -> None:
    make_token, check = HS256_CASES[case]
    await assert_refused(auth, make_token(), 401, check)


async def test_tokens_from_pyjwt_and_jose_are_accepted(auth: AuthClient) -> None:
    for token in (pyjwt_token(claims()), jose_token(claims())):
        status, body = await auth.channel(token, SOCKET_ID, CHANNEL)
        assert status == 200, body


async def test_leeway_accepts_a_token_expired_within_it(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await relay_server(with_jwt(secret=JWT_SECRET, leeway=30))
    auth = AuthClient(http, server.port)
    now = int(time.time())
    status, _ = await auth.channel(pyjwt_token(claims(exp=now - 10)), SOCKET_ID, CHANNEL)
    assert status == 200
    status, body = await auth.channel(pyjwt_token(claims(exp=now - 60)), SOCKET_ID, CHANNEL)
    assert (status, body["check"]) == (401, "expired")


async def test_issuer_and_audience_are_checked_when_configured(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await relay_server(with_jwt(secret=JWT_SECRET, issuer="https://app.example.com", audience="relay"))
    auth = AuthClient(http, server.port)
    good: dict[str, Any] = {"iss": "https://app.example.com", "aud": "relay"}
    status, body = await auth.channel(pyjwt_token(claims(**good)), SOCKET_ID, CHANNEL)
    assert status == 200, body
    status, body = await auth.channel(jose_token(claims(**good)), SOCKET_ID, CHANNEL)
    assert status == 200, body
    await assert_refused(auth, pyjwt_token(claims(iss="https://evil.example.com", aud="relay")), 401, "wrong_issuer")
    await assert_refused(auth, pyjwt_token(claims(iss="https://app.example.com", aud="other")), 401, "wrong_audience")
    await assert_refused(auth, pyjwt_token(claims(aud="relay")), 401, "missing_claim")
    await assert_refused(auth, pyjwt_token(claims(iss="https://app.example.com")), 401, "missing_claim")
    await assert_refused(auth, jose_token(claims(iss="https://app.example.com", aud="x")), 401, "wrong_audience")


async def test_refusals_are_logged_by_check_without_the_token(
    auth: AuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = pyjwt_token(claims(exp=int(time.time()) - 60))
    with caplog.at_level(logging.INFO, logger="relay.jwt"):
        await assert_refused(auth, token, 401, "expired")
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("relay.jwt")]
    assert any("check=expired" in line and "app_id=1001" in line for line in lines), lines
    assert not any(token in line or token.split(".")[1] in line for line in caplog.text.splitlines())


# Public key app: RS256 and algorithm confusion --------------------------------------------------


def hs256_with_secret(payload: dict[str, Any], secret: bytes) -> str:
    """HS256 signed by hand with any bytes as the secret (PyJWT refuses a PEM key as an HMAC secret)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


async def test_public_key_app_accepts_rs256_and_refuses_hs_rs_confusion(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, rsa_key: KeyPair
) -> None:
    server = await relay_server(with_jwt(public_key=rsa_key.public_pem))
    auth = AuthClient(http, server.port)
    for token in (
        pyjwt_token(claims(), rsa_key.private_pem, "RS256"),
        jose_token(claims(), rsa_key.private_pem, "RS256"),
    ):
        status, body = await auth.channel(token, SOCKET_ID, CHANNEL)
        assert status == 200, body
    # The classic confusion: the RSA public key (as published) used as an HMAC secret.
    confused = hs256_with_secret(claims(), rsa_key.public_pem.encode())
    await assert_refused(auth, confused, 401, "algorithm_not_allowed")
    await assert_refused(auth, unsigned_token(claims()), 401, "algorithm_not_allowed")
    other = rsa_pair()
    await assert_refused(auth, pyjwt_token(claims(), other.private_pem, "RS256"), 401, "bad_signature")
    await assert_refused(
        auth, tampered(pyjwt_token(claims(), rsa_key.private_pem, "RS256"), sub="1"), 401, "bad_signature"
    )


@pytest.mark.parametrize(("algorithm", "make"), [("ES256", ec_pair), ("EdDSA", ed25519_pair)])
async def test_ec_and_eddsa_public_keys(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, algorithm: str, make: Any
) -> None:
    pair: KeyPair = make()
    server = await relay_server(with_jwt(public_key=pair.public_pem, algorithms=(algorithm,)))
    auth = AuthClient(http, server.port)
    for token in (
        pyjwt_token(claims(), pair.private_pem, algorithm),
        jose_token(claims(), pair.private_pem, algorithm),
    ):
        status, body = await auth.channel(token, SOCKET_ID, CHANNEL)
        assert status == 200, body
    await assert_refused(auth, pyjwt_token(claims(), make().private_pem, algorithm), 401, "bad_signature")


# JWKS --------------------------------------------------------------------------------------------


def jwk(pair: KeyPair, kid: str, alg: str = "RS256") -> dict[str, Any]:
    return {**pair.jwk, "kid": kid, "alg": alg, "use": "sig"}


async def test_jwks_keys_by_kid_and_refetch_on_unknown_kid(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, rsa_key: KeyPair
) -> None:
    rotated = rsa_pair()
    async with jwks_server(jwk(rsa_key, "k1")) as jwks:
        server = await relay_server(with_jwt(jwks_url=jwks.url, jwks_min_refresh=0))
        auth = AuthClient(http, server.port)
        status, body = await auth.channel(
            pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid="k1"), SOCKET_ID, CHANNEL
        )
        assert status == 200, body
        status, body = await auth.channel(
            jose_token(claims(), rsa_key.private_pem, "RS256", kid="k1"), SOCKET_ID, CHANNEL
        )
        assert status == 200, body
        assert jwks.requests == 1  # cached
        # The app rotates its key: a token with the new kid makes relay fetch the JWKS again.
        jwks.keys.append(jwk(rotated, "k2"))
        status, body = await auth.channel(
            pyjwt_token(claims(), rotated.private_pem, "RS256", kid="k2"), SOCKET_ID, CHANNEL
        )
        assert status == 200, body
        assert jwks.requests == 2
        await assert_refused(auth, pyjwt_token(claims(), rotated.private_pem, "RS256", kid="k1"), 401, "bad_signature")
        await assert_refused(auth, pyjwt_token(claims(), rotated.private_pem, "RS256", kid="nope"), 401, "unknown_kid")
        await assert_refused(
            auth, hs256_with_secret(claims(), rsa_key.public_pem.encode()), 401, "algorithm_not_allowed"
        )


async def test_unknown_kids_do_not_refetch_more_than_once_per_min_refresh(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, rsa_key: KeyPair
) -> None:
    async with jwks_server(jwk(rsa_key, "k1")) as jwks:
        server = await relay_server(with_jwt(jwks_url=jwks.url, jwks_min_refresh=60))
        auth = AuthClient(http, server.port)
        status, _ = await auth.channel(
            pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid="k1"), SOCKET_ID, CHANNEL
        )
        assert status == 200
        for index in range(5):
            token = pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid=f"made-up-{index}")
            await assert_refused(auth, token, 401, "unknown_kid")
        assert jwks.requests == 1


async def test_key_algorithm_in_jwks_must_match_the_token(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, rsa_key: KeyPair
) -> None:
    async with jwks_server(jwk(rsa_key, "k1", alg="RS512")) as jwks:
        server = await relay_server(with_jwt(jwks_url=jwks.url, algorithms=("RS256", "RS512")))
        auth = AuthClient(http, server.port)
        token = pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid="k1")
        await assert_refused(auth, token, 401, "algorithm_not_allowed")


async def test_jwks_endpoint_down_is_503_and_recovers(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, rsa_key: KeyPair
) -> None:
    async with jwks_server(jwk(rsa_key, "k1")) as jwks:
        jwks.mode = "error"
        server = await relay_server(with_jwt(jwks_url=jwks.url, jwks_min_refresh=0))
        auth = AuthClient(http, server.port)
        token = pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid="k1")
        body = await assert_refused(auth, token, 503, "keys_unavailable")
        assert "JWKS" in body["error"]
        jwks.mode = "ok"
        status, _ = await auth.channel(token, SOCKET_ID, CHANNEL)
        assert status == 200


async def test_jwks_endpoint_not_listening_is_503(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession
) -> None:
    async with jwks_server() as jwks:
        url = jwks.url
    server = await relay_server(with_jwt(jwks_url=url))  # nothing listens there any more
    auth = AuthClient(http, server.port)
    await assert_refused(
        auth, pyjwt_token(claims(), rsa_pair().private_pem, "RS256", kid="k1"), 503, "keys_unavailable"
    )


async def test_slow_jwks_endpoint_times_out_without_blocking_other_requests(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession, rsa_key: KeyPair
) -> None:
    async with jwks_server(jwk(rsa_key, "k1")) as jwks:
        jwks.mode = "slow"
        jwks.delay = scaled(10)
        server = await relay_server(with_jwt(jwks_url=jwks.url, jwks_timeout=1.0))
        other = await relay_server(with_jwt(secret=JWT_SECRET))
        auth = AuthClient(http, server.port)
        started = time.monotonic()
        slow = asyncio.ensure_future(
            auth.channel(pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid="k1"), SOCKET_ID, CHANNEL)
        )
        # The event loop (shared by both in-process servers) keeps answering while the fetch waits.
        await asyncio.sleep(0.2)
        assert not slow.done()
        status, _ = await AuthClient(http, other.port).channel(pyjwt_token(claims()), SOCKET_ID, CHANNEL)
        assert status == 200
        status, body = await slow
        assert (status, body["check"]) == (503, "keys_unavailable")
        assert time.monotonic() - started < scaled(5)


def test_alg_none_b64_header_is_really_none() -> None:
    header = unsigned_token({"sub": "1"}).split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "none"


async def test_closing_the_authority_ends_a_slow_fetch_and_its_waiters(rsa_key: KeyPair) -> None:
    async with jwks_server(jwk(rsa_key, "k1")) as jwks:
        jwks.mode = "slow"
        jwks.delay = scaled(10)
        app = with_jwt(jwks_url=jwks.url, jwks_timeout=scaled(10))
        authority = TokenAuthority([app], Metrics())
        waiting = asyncio.ensure_future(
            authority.claims(app, pyjwt_token(claims(), rsa_key.private_pem, "RS256", kid="k1"))
        )
        await wait_until(lambda: jwks.requests > 0)
        started = time.monotonic()
        await authority.close()
        with pytest.raises(TokenRejected) as refused:
            await waiting
        assert refused.value.check == "keys_unavailable"
        assert time.monotonic() - started < scaled(2)

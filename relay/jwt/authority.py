"""TokenAuthority: every app's TokenVerifier, the HTTP session their JWKS fetches share, and the one place
where a refusal is logged and counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import aiohttp

from relay.config import AppConfig
from relay.jwt.jwks import JwksKeys
from relay.jwt.rejection import TokenRejected
from relay.jwt.verifier import KeySource, StaticKeys, TokenClaims, TokenVerifier
from relay.metrics import Metrics

logger = logging.getLogger(__name__)


class TokenAuthority:
    def __init__(self, apps: Iterable[AppConfig], metrics: Metrics) -> None:
        # (app_id, check) -> refusals; bounded: checks are a fixed vocabulary, apps are configured.
        self.failures: dict[tuple[str, str], int] = {}
        metrics.add_counter(
            "relay_jwt_auth_failures",
            "JWT authorisations refused (auth endpoints and tokens at connect), by the check that failed",
            ("app_id", "check"),
            lambda: [((app_id, check), float(count)) for (app_id, check), count in sorted(self.failures.items())],
        )
        self._session: aiohttp.ClientSession | None = None
        self._verifiers: dict[str, TokenVerifier] = {}
        self._jwks: list[JwksKeys] = []
        for app in apps:
            if app.jwt is None:
                continue
            keys: KeySource
            if app.jwt.jwks_url:
                keys = JwksKeys(app.jwt, self._http, time.monotonic)
                self._jwks.append(keys)
            else:
                keys = StaticKeys(app.jwt)
            self._verifiers[app.id] = TokenVerifier(app.jwt, keys)

    def verifier(self, app: AppConfig) -> TokenVerifier | None:
        return self._verifiers.get(app.id)

    async def claims(self, app: AppConfig, token: str) -> TokenClaims:
        """The verified claims of `token` for `app`, or TokenRejected."""
        verifier = self._verifiers.get(app.id)
        if verifier is None:
            raise TokenRejected("jwt_not_configured", "JWT authorisation is not configured for this app", 404)
        return await verifier.verify(token)

    def refused(self, app: AppConfig, rejection: TokenRejected, where: str) -> None:
        """Every refusal passes here: one log line naming the check (never the token) and the failure count."""
        key = (app.id, rejection.check)
        self.failures[key] = self.failures.get(key, 0) + 1
        logger.info("JWT refused app_id=%s %s check=%s: %s", app.id, where, rejection.check, rejection.message)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        for keys in self._jwks:
            await keys.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

"""JwksKeys: the signing keys published at a JWKS URL, fetched without blocking the event loop.

Fetched with a timeout and cached for `jwks_lifespan`; a token with an unknown `kid` triggers a refetch,
at most once per `jwks_min_refresh` seconds so that made-up key ids cannot make relay hammer the URL.
Concurrent requests share one fetch. When a refetch fails, the keys fetched before stay in use.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Final

import aiohttp
import orjson
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

from relay.jwt.rejection import UNAVAILABLE, TokenRejected
from relay.jwt.settings import JwtSettings

logger = logging.getLogger(__name__)

# A JWKS is a few keys; anything much larger is not one.
MAX_JWKS_SIZE: Final = 256 * 1024


class JwksKeys:
    """KeySource over one JWKS URL."""

    def __init__(
        self,
        settings: JwtSettings,
        session: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float],
    ) -> None:
        self._url = settings.jwks_url
        self._timeout = settings.jwks_timeout
        self._lifespan = settings.jwks_lifespan
        self._min_refresh = settings.jwks_min_refresh
        self._session = session
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._fetching: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None, algorithm: str) -> PyJWK:
        now = self._clock()
        fresh = now - self._fetched_at < self._lifespan
        key = self._find(kid)
        if key is not None and fresh:
            return key
        if self._fetching is not None or now - self._attempted_at >= self._min_refresh:
            await self._refresh()
            key = self._find(kid)
        if key is not None:
            return key
        if not self._keys:
            raise TokenRejected("keys_unavailable", "The signing keys (JWKS) could not be fetched", UNAVAILABLE)
        if kid is None:
            raise TokenRejected("missing_kid", "The token has no kid header and the JWKS holds several keys")
        raise TokenRejected("unknown_kid", "The token's kid is not in the JWKS")

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._attempted_at = self._clock()
            self._fetching = asyncio.create_task(self._fetch(), name=f"relay-jwks-fetch {self._url}")
        fetching = self._fetching
        try:
            # shield: one caller giving up (its client went away) must not cancel the others' fetch.
            await asyncio.shield(fetching)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not fetching.cancelled() or (current is not None and current.cancelling()):
                raise
            # The fetch itself was cancelled by close(): no keys, not a cancelled request.
        finally:
            if fetching.done() and self._fetching is fetching:
                self._fetching = None

    async def close(self) -> None:
        """Cancel a fetch in flight (shutdown); the waiting requests see the keys as unavailable."""
        fetching, self._fetching = self._fetching, None
        if fetching is not None:
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session().get(self._url, allow_redirects=False) as response:
                    if response.status != 200:
                        raise ValueError(f"HTTP {response.status}")
                    body = await response.content.read(MAX_JWKS_SIZE + 1)
            if len(body) > MAX_JWKS_SIZE:
                raise ValueError(f"larger than {MAX_JWKS_SIZE} bytes")
            key_set = PyJWKSet.from_dict(orjson.loads(body))
        except (TimeoutError, aiohttp.ClientError, ValueError, PyJWKError, PyJWKSetError) as error:
            # orjson.JSONDecodeError is a ValueError. Stale keys stay in use; new kids wait for the next try.
            logger.warning("fetching JWKS %s failed: %s", self._url, type(error).__name__ if not str(error) else error)
            return
        self._keys = {key.key_id or f"#{index}": key for index, key in enumerate(key_set.keys)}
        self._fetched_at = self._clock()
        logger.info("fetched JWKS %s: %d keys", self._url, len(self._keys))

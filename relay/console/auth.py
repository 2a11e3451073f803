"""Who may open the console: the admin token (Bearer header or the login form's cookie), over a safe link.

The cookie holds an HMAC of the token, never the token itself. Every comparison is constant-time. Wrong
tokens are counted per client address (LoginThrottle): past a few, that address waits before trying again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from relay.admission import Network, client_address

COOKIE: Final = "relay_console"
# Wrong tokens an address may send at once, and how fast it earns another try: 10, then one per 12 s.
FAILED_LOGIN_BURST: Final = 10.0
FAILED_LOGIN_RATE: Final = 1 / 12
# Addresses remembered; past this the idlest half is forgotten (bounded memory whatever an attacker does).
MAX_TRACKED_LOGINS: Final = 10_000


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"relay console session", hashlib.sha256).hexdigest()


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a unix socket peer has no address; treated as remote


class ConsoleAuth:
    def __init__(self, token: str, allow_insecure: bool, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self._token = token.encode()
        self._cookie = cookie_value(token).encode()
        self.allow_insecure = allow_insecure
        self._trusted = trusted_proxies

    def is_token(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def client(self, request: web.Request) -> str:
        """The address failed tries are counted against (the client's, through a trusted proxy)."""
        return client_address(request.remote or "", request.headers.get("X-Forwarded-For"), self._trusted)

    @staticmethod
    def presents_credentials(request: web.Request) -> bool:
        """Whether the request tries a token (a first visit without one is not a failed try)."""
        return "Authorization" in request.headers or COOKIE in request.cookies

    def is_authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return self.is_token(header[7:].strip())
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._cookie)

    def insecure_problem(self, request: web.Request) -> str:
        """Why this request must be refused: the token would cross a network in clear. "" when it is fine.

        Through a trusted proxy (`trusted_proxies`, which sets X-Forwarded-For) the browser's link is the
        proxy's: its X-Forwarded-Proto and the client's address count, not the proxy's plain HTTP to relay.
        """
        if self.allow_insecure:
            return ""
        peer = request.remote or ""
        client = client_address(peer, request.headers.get("X-Forwarded-For"), self._trusted)
        if client != peer:
            secure = request.headers.get("X-Forwarded-Proto", "").lower() == "https" or is_loopback(client)
        else:
            secure = request.secure or is_loopback(peer)
        if secure:
            return ""
        return (
            f"The console refuses plain HTTP from {client or 'an unknown address'}: the admin token would cross "
            "the network in clear. Serve relay behind TLS (a proxy like the example Caddyfile, listed in "
            "trusted_proxies), or set console_allow_insecure = true if this network is trusted."
        )

    def login_cookie(self, response: web.StreamResponse, path: str, secure: bool) -> None:
        response.set_cookie(
            COOKIE, self._cookie.decode(), path=path, httponly=True, samesite="Strict", secure=secure, max_age=43_200
        )


@dataclass(slots=True)
class _Tries:
    left: float
    updated: float


class LoginThrottle:
    """Wrong console tokens per client address: a bucket of FAILED_LOGIN_BURST tries refilled at
    FAILED_LOGIN_RATE per second. Only failures take a try, so a right token is never slowed down until the
    address has used up its tries; then it waits like any other guess."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tries: dict[str, _Tries] = {}

    @property
    def tracked(self) -> int:
        """Addresses remembered now (at most MAX_TRACKED_LOGINS)."""
        return len(self._tries)

    def _refilled(self, address: str, now: float) -> _Tries | None:
        tries = self._tries.get(address)
        if tries is not None:
            tries.left = min(FAILED_LOGIN_BURST, tries.left + (now - tries.updated) * FAILED_LOGIN_RATE)
            tries.updated = now
        return tries

    def wait(self, address: str) -> float:
        """Seconds before `address` may try a token again; 0 when it may now."""
        tries = self._refilled(address, self._clock())
        if tries is None or tries.left >= 1.0:
            return 0.0
        return (1.0 - tries.left) / FAILED_LOGIN_RATE

    def failed(self, address: str) -> None:
        now = self._clock()
        tries = self._refilled(address, now)
        if tries is None:
            if len(self._tries) >= MAX_TRACKED_LOGINS:
                ordered = sorted(self._tries.items(), key=lambda item: item[1].updated)
                for forgotten, _ in ordered[: len(ordered) // 2]:
                    del self._tries[forgotten]
            tries = self._tries[address] = _Tries(FAILED_LOGIN_BURST, now)
        tries.left = max(0.0, tries.left - 1.0)

"""Who may open the console: the admin token (Bearer header or the login form's cookie), over a safe link.

The cookie holds an HMAC of the token, never the token itself. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Final

from aiohttp import web

from relay.admission import Network, client_address

COOKIE: Final = "relay_console"


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

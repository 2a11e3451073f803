"""Sign-in at connect: `?token=<jwt>` on the WebSocket URL (the name is the app's `query_parameter`).

A valid token yields the user the node signs the new session in as (Session.sign_in); an invalid one
refuses the connection with 4009, which pusher-js does not retry, so the app can refresh its token and
reconnect. JWKS trouble is 4100: pusher-js backs off and tries again, right when the token is not at fault.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from relay.config import AppConfig
from relay.jwt.authority import TokenAuthority
from relay.jwt.rejection import UNAVAILABLE, TokenRejected
from relay.protocol import errors
from relay.protocol.actions import Member


class ConnectSignIn:
    """The node's connect hook (node.ConnectHook)."""

    def __init__(self, authority: TokenAuthority) -> None:
        self._authority = authority

    def may_wait(self, app: AppConfig, query: str) -> bool:
        settings = app.jwt
        return settings is not None and f"{settings.query_parameter}=" in query

    async def user(self, app: AppConfig, socket_id: str, query: str) -> Member | errors.PusherError | None:
        """`sub` and `user_info` of the URL's token; None when the app has no JWT settings or the URL no token."""
        if not self.may_wait(app, query):
            return None
        settings = app.jwt
        assert settings is not None
        token = next((value for name, value in parse_qsl(query) if name == settings.query_parameter), "")
        if not token:
            return None
        try:
            claims = await self._authority.claims(app, token)
        except TokenRejected as rejection:
            self._authority.refused(app, rejection, f"connect socket_id={socket_id}")
            if rejection.status == UNAVAILABLE:
                return errors.PusherError(errors.OVER_CAPACITY, rejection.message, close=True)
            return errors.PusherError(errors.CONNECTION_UNAUTHORIZED, rejection.message, close=True)
        return Member(claims.user_id, claims.user_info)

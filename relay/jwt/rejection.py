"""TokenRejected: why a token or an auth request was refused, named by the check that failed."""

from __future__ import annotations

from typing import Final

UNAUTHORIZED: Final = 401
FORBIDDEN: Final = 403
UNAVAILABLE: Final = 503


class TokenRejected(Exception):
    """`check` is a stable name for logs and tests (e.g. "expired", "wrong_audience", "channel_not_permitted");
    `message` is for the client. Neither ever contains the token or a secret."""

    def __init__(self, check: str, message: str, status: int = UNAUTHORIZED) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.status = status

"""What an app's own auth endpoints answer, computed from verified claims (docs/protocol.md §2.3-2.6):
`auth`, `channel_data` for presence, `shared_secret` for private-encrypted, `user_data` for sign-in."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from relay.config import AppConfig
from relay.jwt.permissions import channel_permitted
from relay.jwt.rejection import FORBIDDEN, TokenRejected
from relay.jwt.verifier import TokenClaims
from relay.protocol.channels import ChannelKind, channel_name_problem, channel_type
from relay.signing import channel_auth, user_auth

BAD_REQUEST = 400


def channel_answer(app: AppConfig, claims: TokenClaims, socket_id: str, channel: str) -> dict[str, str]:
    """The body of a successful `POST /auth` for `channel`, or TokenRejected (400 or 403)."""
    problem = channel_name_problem(channel)
    if problem:
        raise TokenRejected("invalid_channel", problem, BAD_REQUEST)
    kind = channel_type(channel).kind
    if kind is ChannelKind.PUBLIC or kind is ChannelKind.SERVER_TO_USER:
        why = "Only private-, private-encrypted- and presence- channels are authorised here"
        raise TokenRejected("channel_needs_no_auth", why, BAD_REQUEST)
    if not channel_permitted(claims.allow, channel):
        raise TokenRejected("channel_not_permitted", "The token does not permit this channel", FORBIDDEN)
    if kind is ChannelKind.PRESENCE:
        channel_data = user_json({"user_id": claims.user_id}, claims.user_info)
        return {
            "auth": channel_auth(app.key, app.secret, socket_id, channel, channel_data),
            "channel_data": channel_data,
        }
    answer = {"auth": channel_auth(app.key, app.secret, socket_id, channel)}
    if kind is ChannelKind.ENCRYPTED:
        master_key = app.jwt.encryption_master_key_base64 if app.jwt is not None else ""
        if not master_key:
            why = "relay has no encryption_master_key_base64 for this app"
            raise TokenRejected("encryption_not_configured", why, FORBIDDEN)
        # As the server SDKs derive it: SHA-256 of the channel name followed by the master key.
        digest = hashlib.sha256(channel.encode() + base64.b64decode(master_key)).digest()
        answer["shared_secret"] = base64.b64encode(digest).decode()
    return answer


def user_answer(app: AppConfig, claims: TokenClaims, socket_id: str) -> dict[str, str]:
    """The body of a successful `POST /user-auth` (sign-in, docs/protocol.md §2.6)."""
    user_data = user_json({"id": claims.user_id}, claims.user_info)
    return {"auth": user_auth(app.key, app.secret, socket_id, user_data), "user_data": user_data}


def user_json(identity: dict[str, Any], user_info: Any) -> str:
    if user_info is not None:
        identity["user_info"] = user_info
    return orjson.dumps(identity).decode()

"""One connection's protocol state machine.

`receive(raw, now)` and `tick(now)` return actions; the session never awaits, never reads a clock and
never sees a socket. Rules it enforces, as docs/protocol.md states them:
- subscribe: valid name (§4), auth by prefix (§2.3), presence `channel_data` (§2.4), `#` only for the
  socket's own server-to-user channel (§9.11); a re-subscribe is answered again, not joined twice;
- client events (§2.5): app setting, `client-` prefix, sender subscribed, private/presence only,
  size and rate limits, `user_id` added on presence;
- sign-in (§2.6): signature over `socket_id::user::user_data`, one user per connection;
- keep-alive (§1.3): ping after `activity_timeout` of inbound silence, close 4201 when nothing answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from relay.protocol import errors, messages
from relay.protocol.actions import (
    Action,
    Close,
    Join,
    Leave,
    Member,
    PublishClientEvent,
    Send,
    SignedIn,
)
from relay.protocol.channels import (
    MAX_EVENT_NAME_LENGTH,
    ChannelKind,
    channel_name_problem,
    channel_type,
    server_to_user_channel,
)
from relay.protocol.ids import UserId

MAX_WATCHLIST: int = 100


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The per-app settings a session enforces."""

    activity_timeout: float = 30.0
    pong_timeout: float = 30.0
    enable_client_events: bool = True
    client_event_rate: float = 10.0  # per second; 0 turns the limit off
    max_message_size: int = 10_000
    max_user_id_length: int = 128
    max_presence_member_size: int = 1024
    user_authentication_timeout: float = 0.0  # 0: sign-in not required
    max_channels: int = 1000  # subscriptions one connection may hold; 0 turns the limit off


class Verifier(Protocol):
    """Checks client auth strings for one app (implemented over relay.signing)."""

    def channel_auth_ok(self, socket_id: str, channel: str, auth: str, channel_data: str | None) -> bool: ...

    def signin_ok(self, socket_id: str, user_data: str, auth: str) -> bool: ...


@dataclass(slots=True)
class _User:
    user_id: UserId
    user_info: Any


class Session:
    def __init__(self, socket_id: str, settings: SessionSettings, verifier: Verifier, now: float) -> None:
        self.socket_id = socket_id
        self.settings = settings
        self._verifier = verifier
        self.connected_at = now
        self.last_inbound = now
        self._pinged_at: float | None = None
        self.closed = False
        # channel -> presence user_id on that channel (None for other kinds)
        self.channels: dict[str, UserId | None] = {}
        # presence channel -> this socket's user_info there (to rebuild cluster state after an outage)
        self.member_info: dict[str, Any] = {}
        self.user: _User | None = None
        # Set once the authorized-connection deadline is met by a private/presence subscription (§2.6, item 5).
        self._authorized = False
        self._tokens = settings.client_event_rate
        self._tokens_at = now

    # What the node asks ------------------------------------------------------------------------

    @property
    def user_id(self) -> UserId | None:
        """The user this connection signed in as (pusher:signin), if any."""
        return None if self.user is None else self.user.user_id

    def member_on(self, channel: str) -> Member | None:
        """This connection's presence membership on `channel` (to rebuild cluster state after an outage)."""
        user_id = self.channels.get(channel)
        return None if user_id is None else Member(user_id, self.member_info.get(channel))

    def close(self) -> list[Leave]:
        """The connection is gone: no more actions from it; one Leave per channel for the node to undo."""
        self.closed = True
        return [Leave(channel, user_id) for channel, user_id in self.channels.items()]

    def reconfigure(self, settings: SessionSettings, verifier: Verifier) -> None:
        """The app's settings or secret changed (SIGHUP): limits and signatures from now on. Subscriptions
        already made stay; the client-event allowance starts from the new rate."""
        self.settings = settings
        self._verifier = verifier
        self._tokens = min(self._tokens, settings.client_event_rate)

    # Frames in -----------------------------------------------------------------------------------

    def receive(self, raw: bytes | str, now: float) -> list[Action]:
        if self.closed:
            return []
        self.last_inbound = now
        self._pinged_at = None
        if _size(raw, self.settings.max_message_size) > self.settings.max_message_size:
            return [_error(errors.CLIENT_EVENT_REJECTED, self._too_large())]
        try:
            message = messages.parse_message(raw)
            return self._handle(message, now)
        except errors.PusherError as error:
            return self._refuse(error)

    def _too_large(self) -> str:
        return f"Message is larger than {self.settings.max_message_size} bytes"

    def _refuse(self, error: errors.PusherError) -> list[Action]:
        frame = Send(errors.encode_error(error.code, error.message, error.channel))
        if error.close and error.code is not None:
            self.closed = True
            return [frame, Close(error.code, error.message)]
        return [frame]

    def _handle(self, message: messages.Message, now: float) -> list[Action]:
        match message:
            case messages.Ping():
                return [Send(messages.PONG)]
            case messages.Pong():
                return []
            case messages.Subscribe():
                return self._subscribe(message)
            case messages.Unsubscribe():
                if message.channel not in self.channels:
                    return []
                self.member_info.pop(message.channel, None)
                return [Leave(message.channel, self.channels.pop(message.channel))]
            case messages.ClientEvent():
                return self._client_event(message, now)
            case messages.Signin():
                return self._signin(message)
            case messages.UnknownEvent():
                return [_error(errors.INVALID_MESSAGE_FORMAT, f"Unsupported event: {message.event[:64]}")]

    # Subscribe -----------------------------------------------------------------------------------

    def _subscribe(self, message: messages.Subscribe) -> list[Action]:
        channel = message.channel
        problem = channel_name_problem(channel)
        if problem:
            return [Send(messages.subscription_error(channel, "InvalidChannel", problem, 400))]
        kind = channel_type(channel)
        member: Member | None = None
        if kind.kind is ChannelKind.SERVER_TO_USER:
            if self.user is None or channel != server_to_user_channel(self.user.user_id):
                return [_auth_error(channel, "Only the signed-in user may subscribe to its own channel")]
        elif kind.kind is ChannelKind.PRESENCE:
            member_or_error = self._presence_member(message)
            if isinstance(member_or_error, Send):
                return [member_or_error]
            member = member_or_error
        elif kind.needs_auth and not self._private_auth_ok(message):
            return [_auth_error(channel, _bad_signature(self.socket_id, channel))]
        limit = self.settings.max_channels
        if limit and channel not in self.channels and len(self.channels) >= limit:
            return [_limit_error(channel, f"A connection may subscribe to at most {limit} channels")]
        if channel in self.channels:
            # Already subscribed: success again, no second membership (§9.10).
            previous = self.channels[channel]
            if member is None or previous == member.user_id:
                return [Join(channel, kind, None if member is None else member)]
            # Same socket, another user id: leave as the old member, join as the new one.
            self.channels[channel] = member.user_id
            self.member_info[channel] = member.user_info
            return [Leave(channel, previous), Join(channel, kind, member)]
        self.channels[channel] = None if member is None else member.user_id
        if member is not None:
            self.member_info[channel] = member.user_info
        return [Join(channel, kind, member)]

    def _private_auth_ok(self, message: messages.Subscribe) -> bool:
        """A private channel's auth signs socket_id:channel. When the app's auth helper also passed
        channel data, the official SDKs sign socket_id:channel:channel_data and pusher-js sends that
        channel_data along; Pusher's service accepts both, and so does relay (docs/protocol.md §2.3).
        The channel data itself means nothing here."""
        if self._verifier.channel_auth_ok(self.socket_id, message.channel, message.auth, None):
            return True
        channel_data = message.channel_data
        return channel_data is not None and self._verifier.channel_auth_ok(
            self.socket_id, message.channel, message.auth, channel_data
        )

    def _presence_member(self, message: messages.Subscribe) -> Member | Send:
        channel = message.channel
        channel_data = message.channel_data
        if channel_data is None:
            # A signed-in socket may join with its sign-in identity, signed over socket_id:channel (§9.11).
            if self.user is None:
                return _auth_error(channel, "Presence channels need channel_data")
            if not self._verifier.channel_auth_ok(self.socket_id, channel, message.auth, None):
                return _auth_error(channel, _bad_signature(self.socket_id, channel))
            return self._sized_member(channel, self.user.user_id, self.user.user_info)
        if not self._verifier.channel_auth_ok(self.socket_id, channel, message.auth, channel_data):
            return _auth_error(channel, _bad_signature(self.socket_id, channel))
        try:
            parsed = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            return _auth_error(channel, "channel_data is not JSON")
        if not isinstance(parsed, dict):
            return _auth_error(channel, "channel_data must be a JSON object")
        user_id = _user_id_string(parsed.get("user_id"))
        if user_id is None:
            return _auth_error(channel, "channel_data needs a user_id (string or number)")
        if len(user_id) > self.settings.max_user_id_length:
            return _limit_error(channel, f"user_id is longer than {self.settings.max_user_id_length} characters")
        return self._sized_member(channel, user_id, parsed.get("user_info"))

    def _sized_member(self, channel: str, user_id: UserId, user_info: Any) -> Member | Send:
        """The user_info limit, for channel_data and sign-in identities alike."""
        if len(orjson.dumps(user_info)) > self.settings.max_presence_member_size:
            limit = self.settings.max_presence_member_size
            return _limit_error(channel, f"user_info is larger than {limit} bytes")
        return Member(user_id, user_info)

    def join_refused(self, channel: str) -> None:
        """The node refused a Join (e.g. presence channel full): forget the subscription."""
        self.channels.pop(channel, None)
        self.member_info.pop(channel, None)

    # Client events -------------------------------------------------------------------------------

    def _client_event(self, message: messages.ClientEvent, now: float) -> list[Action]:
        channel = message.channel
        if not self.settings.enable_client_events:
            return [_error(errors.CLIENT_EVENT_REJECTED, "The app does not have client events enabled", channel)]
        if len(message.event) > MAX_EVENT_NAME_LENGTH:
            # The same name limit as the HTTP API (§4); receivers and webhooks would get it otherwise.
            why = f"Event name is longer than {MAX_EVENT_NAME_LENGTH} characters"
            return [_error(errors.CLIENT_EVENT_REJECTED, why, channel)]
        if channel not in self.channels:
            return [_error(errors.CONNECTION_UNAUTHORIZED, "The client is not subscribed to the channel", channel)]
        kind = channel_type(channel)
        if not kind.allows_client_events:
            why = "Client events are only supported on private and presence channels, not encrypted ones"
            return [_error(errors.CLIENT_EVENT_REJECTED, why, channel)]
        if not self._take_token(now):
            return [_error(errors.CLIENT_EVENT_REJECTED, "Client event rejected due to rate limit", channel)]
        user_id = self.channels[channel] if kind.kind is ChannelKind.PRESENCE else None
        frame = messages.client_event(message.event, channel, message.data, user_id)
        return [PublishClientEvent(channel, message.event, message.data, frame, user_id)]

    def _take_token(self, now: float) -> bool:
        """Token bucket: `client_event_rate` per second, bursts up to the same number."""
        rate = self.settings.client_event_rate
        if rate <= 0:
            return True
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # Sign-in -------------------------------------------------------------------------------------

    def _signin(self, message: messages.Signin) -> list[Action]:
        if not self._verifier.signin_ok(self.socket_id, message.user_data, message.auth):
            # An error frame, not a close (Pusher's protocol: signin_success or pusher:error). pusher-js sends
            # a sign-in signed for the previous socket_id when it reconnects during the user-auth request;
            # a 4009 close would stop it for good before its fresh sign-in arrives.
            return [_error(errors.CONNECTION_UNAUTHORIZED, "Invalid sign-in signature")]
        try:
            user_data = orjson.loads(message.user_data)
        except orjson.JSONDecodeError:
            user_data = None
        user_id = user_data.get("id") if isinstance(user_data, dict) else None
        if not isinstance(user_id, str) or not user_id:
            return [_error(errors.CONNECTION_UNAUTHORIZED, "user_data needs a non-empty string id")]
        if len(user_id) > self.settings.max_user_id_length:
            return [_error(errors.CONNECTION_UNAUTHORIZED, "user id is too long")]
        assert isinstance(user_data, dict)
        if self.user is not None and self.user.user_id != user_id:
            return [_error(errors.CONNECTION_UNAUTHORIZED, "The connection is signed in as another user")]
        actions: list[Action] = [Send(messages.signin_success(message.user_data))]
        watchlist = user_data.get("watchlist")
        watched: tuple[str, ...] = ()
        if isinstance(watchlist, list):
            watched = tuple(str(entry) for entry in watchlist[:MAX_WATCHLIST])
            if len(watchlist) > MAX_WATCHLIST:
                actions.append(_error(errors.WATCHLIST_LIMIT_EXCEEDED, "Watchlist limit exceeded"))
        if self.user is None:
            self.user = _User(UserId(user_id), user_data.get("user_info"))
            actions.append(SignedIn(self.user.user_id, self.user.user_info, watched))
        return actions

    def sign_in(self, user_id: UserId, user_info: Any) -> list[Action]:
        """A sign-in the server vouches for (a token on the WebSocket URL, checked by relay.jwt): the state of
        `pusher:signin` plus the user's own server-to-user channel, so events sent to the user arrive at once.
        No `signin_success` frame: pusher-js fails on one it did not ask for (its signin() was not called)."""
        if self.user is not None:
            return []
        self.user = _User(user_id, user_info)
        actions: list[Action] = [SignedIn(user_id, user_info, ())]
        channel = server_to_user_channel(user_id)
        if not channel_name_problem(channel):
            self.channels[channel] = None
            actions.append(Join(channel, channel_type(channel), None))
        return actions

    # Time ----------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Keep-alive and the sign-in deadline; called periodically by the node."""
        if self.closed:
            return []
        deadline = self.settings.user_authentication_timeout
        if deadline > 0 and self.user is None and not self._authorized and now - self.connected_at >= deadline:
            # Like Pusher's authorized connections: a private or presence subscription in time also counts.
            if any(channel_type(channel).needs_auth for channel in self.channels):
                self._authorized = True
                return self.tick(now)
            return self._refuse(
                errors.PusherError(
                    errors.CONNECTION_UNAUTHORIZED,
                    "Connection not authorized: no sign-in or private subscription in time",
                    close=True,
                )
            )
        if self._pinged_at is not None:
            if now - self._pinged_at >= self.settings.pong_timeout:
                self.closed = True
                return [Close(errors.PONG_NOT_RECEIVED, "Pong reply not received")]
            return []
        if now - self.last_inbound >= self.settings.activity_timeout:
            self._pinged_at = now
            return [Send(messages.PING)]
        return []


def _size(raw: bytes | str, limit: int) -> int:
    """Bytes of UTF-8: the limit is in bytes, and a str of N characters can be up to 4N bytes.

    Encodes only when the character count alone cannot decide (messages over a quarter of the limit).
    """
    if isinstance(raw, bytes) or len(raw) > limit or len(raw) * 4 <= limit:
        return len(raw)
    return len(raw.encode())


def _error(code: int | None, message: str, channel: str = "") -> Send:
    return Send(errors.encode_error(code, message, channel))


def _auth_error(channel: str, why: str) -> Send:
    return Send(messages.subscription_error(channel, "AuthError", why, 401))


def _limit_error(channel: str, why: str) -> Send:
    return Send(messages.subscription_error(channel, "LimitReached", why, errors.OVER_CAPACITY))


def _bad_signature(socket_id: str, channel: str) -> str:
    return f"Invalid signature: expected HMAC SHA256 hex digest of {socket_id}:{channel}[:channel_data]"


def _user_id_string(value: object) -> UserId | None:
    """Laravel sends string ids, others numbers; members are compared as strings (§2.4)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value:
        return UserId(value)
    if isinstance(value, int | float):
        return UserId(json.dumps(value))
    return None

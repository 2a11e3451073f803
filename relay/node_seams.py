"""What the node needs of the parts around it (a transport's connection, the webhook sink, the connect hook),
and the session settings it derives from an app's configuration."""

from __future__ import annotations

from typing import Protocol

from relay.config import DEFAULT_SIGNIN_TIMEOUT, AppConfig
from relay.protocol import errors
from relay.protocol.actions import Member
from relay.protocol.session import Session, SessionSettings
from relay.protocol.webhook_events import WebhookEvent


class Connection(Protocol):
    """One client socket, as the transport provides it."""

    socket_id: str
    app: AppConfig
    session: Session
    # The close code sent or received; 1005 for an empty close frame, 1006 for none (metrics).
    close_code: int

    def send(self, frame: bytes) -> None:
        """Queue one JSON frame; written with the rest of this loop iteration's frames."""

    def send_wire(self, wire: bytes) -> None:
        """Queue bytes already framed for the wire (shared by every subscriber of a fan-out)."""

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, send a close frame with `code` and end the connection."""


class WebhookSink(Protocol):
    def notify(self, app: AppConfig, event: WebhookEvent) -> None:
        """Queue one webhook event for `app`; never blocks."""

    def wants(self, app: AppConfig, name: str) -> bool:
        """Whether some webhook of `app` takes events named `name` (skips work for events nobody wants)."""


class ConnectHook(Protocol):
    async def user(self, app: AppConfig, socket_id: str, query: str) -> Member | errors.PusherError | None:
        """The user a new connection is signed in as from its WebSocket URL's query (a token, relay.jwt.connect),
        None for an anonymous connection, or the error that refuses it."""

    def may_wait(self, app: AppConfig, query: str) -> bool:
        """Whether user() may suspend for this query (a token to verify); if not, an open can run without a task."""


class NoWebhooks:
    def notify(self, app: AppConfig, event: WebhookEvent) -> None:
        pass

    def wants(self, app: AppConfig, name: str) -> bool:
        return False


def session_settings(app: AppConfig) -> SessionSettings:
    return SessionSettings(
        activity_timeout=app.activity_timeout,
        pong_timeout=app.pong_timeout,
        enable_client_events=app.enable_client_events,
        client_event_rate=app.client_event_rate,
        max_message_size=app.max_message_size,
        max_presence_member_size=app.max_presence_member_size,
        user_authentication_timeout=signin_deadline(app),
        max_channels=app.max_channels_per_connection,
    )


def signin_deadline(app: AppConfig) -> float:
    """Seconds a connection has to sign in, 0 when sign-in is optional."""
    if app.user_authentication_timeout > 0:
        return app.user_authentication_timeout
    return DEFAULT_SIGNIN_TIMEOUT if app.enable_user_authentication else 0.0

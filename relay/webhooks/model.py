"""What the webhook machinery moves around: events, deliveries (one signed request), dead letters, held leaves.

Pure values and their JSON encoding. A Delivery is encoded when it goes into a store (Redis lists hold the
bytes) and decoded, validated, when it comes back: `Any` stops here.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from relay.protocol.webhook_events import WebhookEvent, WebhookEventName

# A leave is held back for leave_delay; the join that follows it within that time cancels it.
LEAVE_FOR_JOIN: Final[dict[str, str]] = {
    WebhookEventName.CHANNEL_OCCUPIED: WebhookEventName.CHANNEL_VACATED,
    WebhookEventName.MEMBER_ADDED: WebhookEventName.MEMBER_REMOVED,
}
JOIN_FOR_LEAVE: Final[dict[str, str]] = {leave: join for join, leave in LEAVE_FOR_JOIN.items()}


class MalformedRecord(ValueError):
    """A stored delivery or dead letter that does not decode; skipped and logged by its reader."""


def new_delivery_id() -> str:
    return secrets.token_hex(16)


def webhook_event(event: Mapping[str, Any]) -> WebhookEvent:
    """Copy the node's event, keeping only JSON scalars the webhook body may carry."""
    return {
        name: value for name, value in event.items() if isinstance(value, str | int) and not isinstance(value, bool)
    }


def hold_key(app_id: str, event: Mapping[str, str | int]) -> str:
    """Names the thing a leave/join pair is about: a channel, or one member of a presence channel.

    JSON, because user ids may contain any character and the key must stay unambiguous.
    """
    name = event.get("name")
    channel = str(event.get("channel", ""))
    if name in (WebhookEventName.MEMBER_ADDED, WebhookEventName.MEMBER_REMOVED):
        return orjson.dumps([app_id, "member", channel, str(event.get("user_id", ""))]).decode()
    return orjson.dumps([app_id, "channel", channel]).decode()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request to one webhook URL; `id` stays the same across retries and replays (X-Relay-Delivery-Id)."""

    id: str
    app_id: str
    url: str
    events: tuple[WebhookEvent, ...]
    created_ms: int
    # Wall-clock ms of the first attempt; 0 until then. The retry window (retry_for) runs from here, so a
    # delivery that waited in a long queue still gets its full window.
    first_attempt_ms: int = 0
    attempts: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "app_id": self.app_id,
            "url": self.url,
            "events": list(self.events),
            "created_ms": self.created_ms,
            "first_attempt_ms": self.first_attempt_ms,
            "attempts": self.attempts,
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.as_json())

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Delivery:
        try:
            events = payload["events"]
            if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
                raise MalformedRecord("events must be a list of objects")
            delivery = cls(
                id=_string(payload["id"]),
                app_id=_string(payload["app_id"]),
                url=_string(payload["url"]),
                events=tuple(webhook_event(event) for event in events),
                created_ms=_integer(payload["created_ms"]),
                first_attempt_ms=_integer(payload.get("first_attempt_ms", 0)),
                attempts=_integer(payload.get("attempts", 0)),
            )
        except KeyError as missing:
            raise MalformedRecord(f"missing field {missing}") from None
        return delivery

    @classmethod
    def decode(cls, raw: bytes) -> Delivery:
        return cls.from_json(_object(raw))

    def replayed(self) -> Delivery:
        """The same request, with a fresh retry window (same id, so receivers can de-duplicate)."""
        return dataclasses.replace(self, first_attempt_ms=0, attempts=0)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery whose retries ran out, kept for an operator to read and replay."""

    delivery: Delivery
    failed_at_ms: int
    error: str

    def as_json(self) -> dict[str, Any]:
        return {**self.delivery.as_json(), "failed_at_ms": self.failed_at_ms, "error": self.error}

    def encode(self) -> bytes:
        return orjson.dumps(self.as_json())

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        payload = _object(raw)
        try:
            return cls(Delivery.from_json(payload), _integer(payload["failed_at_ms"]), _string(payload["error"]))
        except KeyError as missing:
            raise MalformedRecord(f"missing field {missing}") from None


@dataclass(frozen=True, slots=True)
class Hold:
    """A leave (channel_vacated, member_removed) waiting out leave_delay; `token` tells this hold from a later one."""

    app_id: str
    event: WebhookEvent
    token: str
    due_ms: int

    @property
    def key(self) -> str:
        return hold_key(self.app_id, self.event)

    def encode(self) -> bytes:
        return orjson.dumps(
            {"app_id": self.app_id, "event": self.event, "token": self.token, "due_ms": self.due_ms, "key": self.key}
        )

    @classmethod
    def decode(cls, raw: bytes) -> Hold:
        payload = _object(raw)
        try:
            event = payload["event"]
            if not isinstance(event, dict):
                raise MalformedRecord("event must be an object")
            return cls(
                _string(payload["app_id"]), webhook_event(event), _string(payload["token"]), _integer(payload["due_ms"])
            )
        except KeyError as missing:
            raise MalformedRecord(f"missing field {missing}") from None


@dataclass(frozen=True, slots=True)
class Cancel:
    """A join (channel_occupied, member_added): if a hold for the same key is pending, both are dropped."""

    app_id: str
    event: WebhookEvent

    @property
    def key(self) -> str:
        return hold_key(self.app_id, self.event)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRecord(f"not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise MalformedRecord("not a JSON object")
    return payload


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise MalformedRecord(f"expected a string, got {value!r}")
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedRecord(f"expected an integer, got {value!r}")
    return value

"""ConsoleTap: what the node and the webhook sender tell an open console, at no cost while none is open.

Callers check `tap.active` (a plain attribute) before calling, so a closed console costs one boolean
test. An open one gets small `ConsoleEvent`s with truncated payloads and no secrets; each sink bounds
its own queue and counts what it had to drop. Imports nothing of relay's, so every layer may hold a tap.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

# Longest payload shown; longer ones end with an ellipsis and say how long they were.
MAX_DATA: Final = 500
# Log lines per second a node hands to consoles; beyond it lines are dropped (and counted) before they
# are even built: nobody reads faster, and a busy node keeps its CPU for its clients.
LINE_BUDGET: Final = 1_000


class Kind(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIPTION_ERROR = "subscription_error"
    ERROR = "error"  # a pusher:error frame sent to a client
    API_EVENT = "api_event"
    CLIENT_EVENT = "client_event"
    WEBHOOK_SENT = "webhook_sent"
    WEBHOOK_FAILED = "webhook_failed"


@dataclass(frozen=True, slots=True)
class ConsoleEvent:
    """One line of the live log. `detail` is a close code, an error, a user id or a webhook's events."""

    kind: Kind
    app_id: str
    time: float
    channel: str = ""
    event: str = ""
    socket_id: str = ""
    detail: str = ""
    data: str = ""
    node: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "app_id": self.app_id,
            "time": self.time,
            "channel": self.channel,
            "event": self.event,
            "socket_id": self.socket_id,
            "detail": self.detail,
            "data": self.data,
            "node": self.node,
        }

    @classmethod
    def from_json(cls, raw: Any, node: str) -> ConsoleEvent | None:
        """An event relayed by another node, or None when it does not look like one."""
        if not isinstance(raw, dict):
            return None
        try:
            kind = Kind(str(raw.get("kind")))
        except ValueError:
            return None
        texts = {name: raw.get(name, "") for name in ("app_id", "channel", "event", "socket_id", "detail", "data")}
        if not all(isinstance(value, str) for value in texts.values()):
            return None
        stamp = raw.get("time")
        return cls(
            kind,
            texts["app_id"],
            float(stamp) if isinstance(stamp, int | float) else time.time(),
            texts["channel"],
            texts["event"],
            texts["socket_id"],
            truncate(texts["detail"]),
            truncate(texts["data"]),
            node,
        )


def decode_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object (a frame, a message between nodes), or None for anything else."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def truncate(text: str) -> str:
    if len(text) <= MAX_DATA:
        return text
    return f"{text[:MAX_DATA]}… ({len(text)} characters)"


class ConsoleSink(Protocol):
    def put(self, event: ConsoleEvent) -> None:
        """Take one event without blocking; drop (and count) it when full."""


class ConsoleTap:
    """Fans events out to the attached sinks: this node's open pages, and the cluster relay when a console
    is open on another node. `active` is True exactly while a sink is attached."""

    def __init__(self, node: str = "", budget: int = LINE_BUDGET) -> None:
        self.active = False
        self.node = node
        # Lines over the budget, since start.
        self.dropped = 0
        self._sinks: list[ConsoleSink] = []
        self._budget = budget
        self._window_start = 0.0
        self._left = budget

    def attach(self, sink: ConsoleSink) -> None:
        if sink not in self._sinks:
            self._sinks.append(sink)
        self.active = True

    def detach(self, sink: ConsoleSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
        self.active = bool(self._sinks)

    def admit(self) -> bool:
        """Whether one more line fits this second's budget; counts it as dropped when not."""
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._left = self._budget
        if self._left <= 0:
            self.dropped += 1
            return False
        self._left -= 1
        return True

    def emit(self, kind: Kind, app_id: str, **fields: str) -> None:
        """One line to every sink; callers check admit() first."""
        event = ConsoleEvent(kind, app_id, time.time(), node=self.node, **fields)
        for sink in self._sinks:
            sink.put(event)

    # What the node reports -----------------------------------------------------------------------

    def connected(self, app_id: str, socket_id: str) -> None:
        if not self.admit():
            return
        self.emit(Kind.CONNECTED, app_id, socket_id=socket_id)

    def disconnected(self, app_id: str, socket_id: str, code: int) -> None:
        if not self.admit():
            return
        self.emit(Kind.DISCONNECTED, app_id, socket_id=socket_id, detail=f"close code {code}")

    def subscribed(self, app_id: str, socket_id: str, channel: str, user_id: str | None = None) -> None:
        if not self.admit():
            return
        detail = "" if user_id is None else f"user_id {truncate(user_id)}"
        self.emit(Kind.SUBSCRIBED, app_id, socket_id=socket_id, channel=channel, detail=detail)

    def unsubscribed(self, app_id: str, socket_id: str, channel: str) -> None:
        if not self.admit():
            return
        self.emit(Kind.UNSUBSCRIBED, app_id, socket_id=socket_id, channel=channel)

    def sent(self, app_id: str, socket_id: str, frame: bytes) -> None:
        """A frame the node sent to one client: only errors are worth a line."""
        if b"error" not in frame or not self.admit():
            return
        message = decode_object(frame)
        if message is None:
            return
        name = message.get("event")
        if name not in ("pusher:error", "pusher:subscription_error"):
            return
        data = message.get("data")
        if isinstance(data, str):
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        kind = Kind.ERROR if name == "pusher:error" else Kind.SUBSCRIPTION_ERROR
        channel = message.get("channel")
        self.emit(
            kind,
            app_id,
            socket_id=socket_id,
            channel=channel if isinstance(channel, str) else "",
            event=name,
            detail=truncate(_error_text(data)),
        )

    def api_event(self, app_id: str, channel: str, event: str, data: str, except_socket_id: str) -> None:
        if not self.admit():
            return
        detail = f"except {except_socket_id}" if except_socket_id else ""
        self.emit(Kind.API_EVENT, app_id, channel=channel, event=event, data=truncate(data), detail=detail)

    def client_event(self, app_id: str, socket_id: str, channel: str, event: str, data: object) -> None:
        if not self.admit():
            return
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        self.emit(Kind.CLIENT_EVENT, app_id, socket_id=socket_id, channel=channel, event=event, data=truncate(text))

    # What the webhook sender reports --------------------------------------------------------------

    def webhook(self, app_id: str, host: str, events: Iterable[Mapping[str, object]], error: str | None) -> None:
        """A webhook request to `host` (never the full URL: it may carry a token) carrying `events`."""
        if not self.admit():
            return
        names = ", ".join(
            " ".join(str(event[field]) for field in ("name", "channel") if field in event) for event in events
        )
        if error is None:
            self.emit(Kind.WEBHOOK_SENT, app_id, detail=f"to {host}: {names}")
        else:
            self.emit(Kind.WEBHOOK_FAILED, app_id, detail=truncate(f"to {host}: {names}: {error}"))


def _error_text(data: object) -> str:
    if isinstance(data, dict):
        parts = [f"{name} {data[name]}" for name in ("code", "status", "type", "error", "message") if data.get(name)]
        return ", ".join(parts)
    return str(data)

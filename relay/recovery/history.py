"""ChannelHistory: the recent event frames of one channel, bounded by count, bytes and age.

Each frame gets the channel's next sequence number and an event id, `<epoch>-<seq>`, that apps read
as `relay_id` inside the event's data (see docs/recovery.md). The epoch is new for every history, so
ids from before a restart never compare equal to new ones.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from typing import Any, Final, NamedTuple

import orjson

# The key relay adds to an event's data object; pusher-js keeps `data`, so apps see it there.
ID_KEY: Final = "relay_id"
# An HTTP API frame (messages.channel_event) holding a JSON object as its data string, which comes last.
_DATA_OBJECT: Final = b'"data":"{'
_DATA_END: Final = b'}"}'


class Entry(NamedTuple):  # a NamedTuple, not a dataclass: one is made per event, and it is 3x cheaper
    seq: int
    at: float  # loop time it was recorded
    frame: bytes
    # The socket that must not get it (the sender of a client event, or the HTTP API's socket_id).
    except_socket_id: str


def with_event_id(frame: bytes, event_id: str) -> bytes:
    """The frame with `relay_id` added first in its data when the data is a JSON object (a string holding
    one, as the HTTP API sends, or an object, as client events carry); any other frame unchanged."""
    start = frame.find(_DATA_OBJECT)
    if start > 0 and frame.endswith(_DATA_END):
        # The fast path, bytes only: orjson escapes every quote inside strings, so this marker is the key.
        # Data that only looks like an object ("{oops}") gets the id too and stays the invalid JSON it was.
        brace = start + len(_DATA_OBJECT)
        empty = not frame[brace:-3].strip()
        head = b'\\"' + ID_KEY.encode() + b'\\":\\"' + event_id.encode() + b'\\"'
        return frame[:brace] + head + (b"" if empty else b",") + frame[brace:]
    try:
        body: Any = orjson.loads(frame)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict):
            body["data"] = {ID_KEY: event_id, **data}
            return orjson.dumps(body)
        if isinstance(data, str) and data.lstrip().startswith("{"):
            # Data with leading whitespace, from frames made elsewhere; the publisher's bytes are kept.
            text = data.lstrip()
            if not isinstance(orjson.loads(text), dict):
                return frame
            id_object = orjson.dumps({ID_KEY: event_id}).decode()
            rest = text[1:].lstrip()
            body["data"] = id_object if rest.startswith("}") else id_object[:-1] + "," + rest
            return orjson.dumps(body)
    except orjson.JSONDecodeError:
        pass
    return frame


class ChannelHistory:
    def __init__(self, max_events: int, max_bytes: int, max_age: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.epoch = secrets.token_hex(4)
        self.entries: deque[Entry] = deque()
        self.bytes = 0
        self.last_seq = 0  # the newest sequence number given, 0 before the first event
        self.last_used = 0.0  # when a subscriber last joined or left (for dropping idle histories)
        self.subscribers = 0  # on this node now; at 0 for a whole window the history is dropped

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def append(self, frame: bytes, except_socket_id: str, now: float) -> bytes:
        """Record one event; returns the frame with its id, the bytes every subscriber is sent."""
        self.last_seq += 1
        framed = with_event_id(frame, self.event_id(self.last_seq))
        self.entries.append(Entry(self.last_seq, now, framed, except_socket_id))
        self.bytes += len(framed)
        self.trim(now)
        return framed

    def trim(self, now: float) -> None:
        entries = self.entries
        oldest_kept = now - self.max_age
        while entries and (
            len(entries) > self.max_events or self.bytes > self.max_bytes or entries[0].at < oldest_kept
        ):
            self.bytes -= len(entries.popleft().frame)

    def since(self, seq: int, now: float) -> list[Entry] | None:
        """The events after `seq`, oldest first; None when some of them are no longer kept (a gap)."""
        self.trim(now)
        if seq >= self.last_seq:
            return []
        first_kept = self.entries[0].seq if self.entries else self.last_seq + 1
        if seq + 1 < first_kept:
            return None
        # Sequence numbers are consecutive, so the first wanted entry's index is known.
        return list(itertools.islice(self.entries, seq + 1 - first_kept, None))

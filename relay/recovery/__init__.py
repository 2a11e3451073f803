"""Missed-message recovery for stock pusher-js and Echo clients (docs/recovery.md)."""

from relay.recovery.replay import GAP_EVENT, Recovery, wants_recovery
from relay.recovery.streamed import StreamRecovery, position_of

__all__ = ["GAP_EVENT", "Recovery", "StreamRecovery", "position_of", "wants_recovery"]

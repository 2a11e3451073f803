"""Missed-message recovery for stock pusher-js and Echo clients (docs/recovery.md)."""

from relay.recovery.replay import GAP_EVENT, Recovery, wants_recovery

__all__ = ["GAP_EVENT", "Recovery", "wants_recovery"]

"""How long tests wait. Every wait scales with RELAY_TEST_TIMEOUT_FACTOR (slow CI machines set it > 1)."""

from __future__ import annotations

import os
from typing import Final


def _read_factor() -> float:
    raw = os.environ.get("RELAY_TEST_TIMEOUT_FACTOR", "1")
    try:
        factor = float(raw)
    except ValueError as exc:
        raise RuntimeError(f"RELAY_TEST_TIMEOUT_FACTOR must be a number, got {raw!r}") from exc
    if factor <= 0:
        raise RuntimeError(f"RELAY_TEST_TIMEOUT_FACTOR must be > 0, got {raw!r}")
    return factor


TIMEOUT_FACTOR: Final[float] = _read_factor()


def scaled(seconds: float) -> float:
    """`seconds` multiplied by RELAY_TEST_TIMEOUT_FACTOR."""
    return seconds * TIMEOUT_FACTOR


# Default wait for one awaited event (a frame, a line, a state change).
TIMEOUT: Final[float] = scaled(10.0)
# Default wait for a process to answer its readiness check after it was started.
STARTUP_TIMEOUT: Final[float] = scaled(20.0)
# Default wait for a process to exit after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT: Final[float] = scaled(10.0)

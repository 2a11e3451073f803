"""The transport tests run on both event loops: `relay serve` runs on uvloop, whose transports differ from
asyncio's (set_protocol, types), and asyncio's is what runs where uvloop has no wheel.

Servers come from the `relay_server` fixture (tests.support.fixtures), once per transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    if item.path.name == "test_transport_cli.py":
        return {"asyncio": asyncio.new_event_loop}  # the servers there are subprocesses, on uvloop already
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

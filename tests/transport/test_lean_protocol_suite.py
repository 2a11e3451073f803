"""tests/integration's WebSocket protocol suite, run unchanged against the lean transport.

The fixtures come from tests/transport/conftest.py; `transport` is pinned to "lean" here because
tests/integration already runs the same tests against the aiohttp endpoint.
"""

from __future__ import annotations

import pytest

from tests.integration.test_ws_protocol import *  # noqa: F403


@pytest.fixture
def transport() -> str:
    return "lean"

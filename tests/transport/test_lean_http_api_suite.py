"""tests/integration's HTTP API suite, run unchanged against the lean transport.

The lean transport answers signed publishes itself (relay/transport/http_fast.py) and hands the rest
to aiohttp: every validation rule, status and JSON error body must be the same on both paths.
The fixtures come from tests/transport/conftest.py, with `transport` pinned to "lean".
"""

from __future__ import annotations

import pytest

from tests.integration.test_http_api import *  # noqa: F403


@pytest.fixture
def transport() -> str:
    return "lean"

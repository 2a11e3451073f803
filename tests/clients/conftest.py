"""Fixtures for the Node client tests: relay as a subprocess, real pusher-js / Laravel Echo
scripts (js/), and the official Python and Node server SDKs as publishers (see harness.py)."""

from __future__ import annotations

import pytest

from tests.clients.harness import Clients, app_config
from tests.support import RelayProcess
from tests.support.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    NodeFactory,
    RelayFactory,
    caddy_factory,
    node_factory,
    redis_process,
    relay_factory,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "auth_features: needs private/presence channel auth, client events or user sign-in "
        "(the follow-up issue to the public-channel server)",
    )


@pytest.fixture
def relay(relay_factory: RelayFactory) -> RelayProcess:  # noqa: F811
    """relay with the test app, client events enabled."""
    return relay_factory(app_config())


@pytest.fixture
def clients(node_factory: NodeFactory) -> Clients:  # noqa: F811
    return Clients(node_factory)

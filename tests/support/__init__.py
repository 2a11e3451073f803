"""Process helpers for relay's tests: real redis-server, relay, Caddy and Node clients on loopback.

Every helper starts a real process, waits for proof that it is ready (PING, `GET /up`, an HTTP
answer), and is stopped by PID: SIGTERM, then SIGKILL after a timeout. A missing binary raises
ProcessError, so the test fails rather than skips. Waits scale with RELAY_TEST_TIMEOUT_FACTOR.
Fixtures for all of them live in tests.support.fixtures.
"""

from .caddy import CaddyProcess, start_caddy
from .node import NodeClient, start_node
from .ports import free_port
from .process import ManagedProcess, ProcessError, require_binary
from .redis import RedisProcess, start_redis
from .relay import DEFAULT_APP, RelayProcess, start_relay, to_toml
from .timeouts import STARTUP_TIMEOUT, STOP_TIMEOUT, TIMEOUT, TIMEOUT_FACTOR, scaled

__all__ = [
    "DEFAULT_APP",
    "STARTUP_TIMEOUT",
    "STOP_TIMEOUT",
    "TIMEOUT",
    "TIMEOUT_FACTOR",
    "CaddyProcess",
    "ManagedProcess",
    "NodeClient",
    "ProcessError",
    "RedisProcess",
    "RelayProcess",
    "free_port",
    "require_binary",
    "scaled",
    "start_caddy",
    "start_node",
    "start_redis",
    "start_relay",
    "to_toml",
]

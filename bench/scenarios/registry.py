"""Scenario groups by the name `--scenarios` takes, in run order."""

from collections.abc import Awaitable, Callable
from typing import Final

from bench.results import Result
from bench.scenarios.base import Context
from bench.scenarios.cluster import cluster_fanout
from bench.scenarios.fanout import fanout_large, fanout_small
from bench.scenarios.fanout_max import fanout_max
from bench.scenarios.http_api import http_api_no_subscribers, http_api_with_subscribers
from bench.scenarios.idle_memory import idle_memory
from bench.scenarios.many_channels import many_channels_batch, many_channels_events
from bench.scenarios.presence_churn import presence_churn

Scenario = Callable[[Context], Awaitable[Result]]

GROUPS: Final[dict[str, list[Scenario]]] = {
    "fanout": [fanout_small, fanout_large],
    "fanout-max": [fanout_max],
    "many-channels": [many_channels_events, many_channels_batch],
    "idle-memory": [idle_memory],
    "http-api": [http_api_no_subscribers, http_api_with_subscribers],
    "presence-churn": [presence_churn],
    "cluster": [cluster_fanout],
}
# Scenarios the C receiver cannot drive (presence auth, churn, watcher): always the Python worker.
NEEDS_PYTHON_WORKER: Final = {presence_churn}
# Cross-node needs Redis and a server built with a Redis adapter: only with --cluster.
DEFAULT_GROUPS: Final = [g for g in GROUPS if g != "cluster"]

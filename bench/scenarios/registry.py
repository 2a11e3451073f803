"""Scenario groups by the name `--scenarios` takes, in run order."""

from collections.abc import Awaitable, Callable
from typing import Final

from bench.results import Result
from bench.scenarios.base import Context
from bench.scenarios.cluster import cluster_fanout
from bench.scenarios.fanout import fanout_huge, fanout_large, fanout_small
from bench.scenarios.fanout_max import fanout_max
from bench.scenarios.http_api import http_api_no_subscribers, http_api_with_subscribers
from bench.scenarios.idle_memory import connect_rate, idle_memory
from bench.scenarios.many_channels import many_channels_batch, many_channels_events
from bench.scenarios.presence_churn import presence_churn
from bench.scenarios.scale import scale

Scenario = Callable[[Context], Awaitable[Result]]

GROUPS: Final[dict[str, list[Scenario]]] = {
    "fanout": [fanout_small, fanout_large],
    "fanout-max": [fanout_max],
    "many-channels": [many_channels_events, many_channels_batch],
    "idle-memory": [idle_memory],
    "http-api": [http_api_no_subscribers, http_api_with_subscribers],
    "presence-churn": [presence_churn],
    "cluster": [cluster_fanout],
    # Issue 20's figures (bench/README.md "Performance round 2"): one run with
    # --scenarios connect-rate,http-api,fanout,fanout-20k,scale-50k
    "connect-rate": [connect_rate],
    "fanout-20k": [fanout_huge],
    "scale-50k": [scale],
}
# Scenarios the C receiver cannot drive (presence auth, churn, watcher): always the Python worker.
NEEDS_PYTHON_WORKER: Final = {presence_churn}
# Cross-node needs Redis and a server built with a Redis adapter: only with --cluster. The issue-20
# groups hold up to 20,000-50,000 connections for minutes: only when asked for.
ON_REQUEST: Final = {"cluster", "connect-rate", "fanout-20k", "scale-50k"}
DEFAULT_GROUPS: Final = [g for g in GROUPS if g not in ON_REQUEST]

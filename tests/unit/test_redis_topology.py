"""The redis+cluster:// URL and the state keys' hash tag (relay/redis/topology.py)."""

from __future__ import annotations

import pytest

from relay.redis.link import check_url, describe
from relay.redis.topology import is_cluster_url, key_prefix, seed_urls

CLUSTER = "redis+cluster://alice:s3cret@10.0.0.1:7000,10.0.0.2:7001,redis-c"


def test_cluster_url_lists_every_seed_with_the_credentials() -> None:
    assert is_cluster_url(CLUSTER)
    assert seed_urls(CLUSTER) == [
        "redis://alice:s3cret@10.0.0.1:7000/0",
        "redis://alice:s3cret@10.0.0.2:7001/0",
        "redis://alice:s3cret@redis-c:6379/0",
    ]


def test_logs_name_the_seeds_never_the_password() -> None:
    assert describe(CLUSTER) == "Redis Cluster 10.0.0.1:7000,10.0.0.2:7001,redis-c:6379"
    assert describe("redis://:pw@127.0.0.1:6380/0") == "127.0.0.1:6380"


def test_state_keys_share_one_hash_tag_on_a_cluster_only() -> None:
    assert key_prefix(CLUSTER, "relay") == "{relay}"
    assert key_prefix("redis://127.0.0.1:6379/0", "relay") == "relay"


def test_a_seed_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError):
        check_url("redis+cluster://10.0.0.1:7000,:7001")

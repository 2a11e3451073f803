"""The redis+cluster:// URL, the state keys' hash tag and the history keys' (relay/redis/topology.py)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from relay.config import RedisConfig
from relay.redis.adapter import RedisAdapter
from relay.redis.link import check_url, describe
from relay.redis.topology import history_key, is_cluster_url, key_prefix, seed_urls

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


@pytest.mark.parametrize("name", [b"relay:ev:1001:presence-room.7", b"{relay}:ev:1001:private-a", b"a{b}c:ev:1:x"])
def test_a_history_key_shares_its_shard_channel_slot(name: bytes) -> None:
    assert key_slot(history_key(name)) == key_slot(name)
    assert history_key(name) != name


def test_a_cluster_prefix_with_a_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisAdapter(RedisConfig(url=CLUSTER, prefix="re{lay"))

"""Redis Cluster addressing: the `redis+cluster://` URL, the hash tag on state keys, and which primary serves a slot.

A cluster URL lists seed nodes (`redis+cluster://[user:password@]host:port,host:port`); the slot map is read
from the first seed that answers, and only while the cluster reports `cluster_state:ok`. relay reads it once
per session: a MOVED, ASK, TRYAGAIN or CLUSTERDOWN reply ends the session like a lost connection, and the
next one reads the map again (docs/redis.md, Redis Cluster).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, RedisError, ResponseError, TryAgainError

CLUSTER_SCHEME: Final = "redis+cluster"
SLOTS: Final = 16384
# Replies that mean the slot map changed under us (MovedError is an AskError).
TOPOLOGY_ERRORS: Final = (AskError, ClusterDownError, TryAgainError)
# What a script says instead of MOVED when a key or shard channel it touches is served elsewhere.
NON_LOCAL: Final = "non local key"


def is_topology_error(reply: ResponseError) -> bool:
    """True for an error reply meaning the slot map changed (never from a single Redis)."""
    return isinstance(reply, TOPOLOGY_ERRORS) or NON_LOCAL in str(reply)


class ClusterUnavailable(ConnectionError):
    """No seed answered, or the cluster does not serve every slot right now."""


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def key_prefix(url: str, prefix: str) -> str:
    """The prefix of every state key: `{prefix}` on a cluster, so each Lua script touches one slot."""
    return "{" + prefix + "}" if is_cluster_url(url) else prefix


def history_key(channel_name: bytes) -> bytes:
    """On a Redis Cluster, the history stream key of a recovering channel: in its shard channel's slot, so one
    script on that shard appends and SPUBLISHes (docs/recovery.md). The shard channel's name itself stays as
    on one Redis; the key's hash tag is that name, unless the name carries a hash tag of its own already."""
    start = channel_name.find(b"{")
    if start >= 0 and channel_name.find(b"}", start + 1) > start + 1:  # Redis hashes what is between: so the key
        return channel_name + b":history"
    return b"{" + channel_name + b"}:history"


def _split(url: str) -> tuple[str, list[tuple[str, int]]]:
    """(user info with its '@' or "", [(host, port)]) of a cluster URL; ValueError when malformed."""
    rest = url[len(CLUSTER_SCHEME) + 3 :].split("/", 1)[0].split("?", 1)[0]
    credentials, _, hosts = rest.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        parts = urllib.parse.urlsplit("//" + item)
        if not parts.hostname:
            raise ValueError(f"no host in Redis Cluster seed {item!r}")
        seeds.append((parts.hostname, parts.port or 6379))
    return (credentials + "@" if credentials else ""), seeds


def seed_urls(url: str) -> list[str]:
    """One `redis://` URL per seed of a cluster URL."""
    credentials, seeds = _split(url)
    return [f"redis://{credentials}{host}:{port}/0" for host, port in seeds]


def describe_cluster(url: str) -> str:
    """The seeds, for logs (never the password)."""
    _, seeds = _split(url)
    return "Redis Cluster " + ",".join(f"{host}:{port}" for host, port in seeds)


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Which primary serves each slot, as `redis://` URLs."""

    primaries: tuple[str, ...]
    owner: tuple[int, ...]  # slot -> index into primaries

    def shard_of(self, name: bytes) -> int:
        """The index of the primary serving `name` (a key or a shard channel)."""
        return self.owner[key_slot(name)]


def _slot_map(credentials: str, reply: object) -> SlotMap:
    """From CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...]."""
    if not isinstance(reply, list):
        raise ClusterUnavailable(f"unexpected CLUSTER SLOTS reply {reply!r}")
    primaries: list[str] = []
    owner = [-1] * SLOTS
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        address = f"redis://{credentials}{host or '127.0.0.1'}:{int(primary[1])}/0"
        if address not in primaries:
            primaries.append(address)
        index = primaries.index(address)
        for slot in range(start, end + 1):
            owner[slot] = index
    if -1 in owner:
        raise ClusterUnavailable("the cluster does not cover every slot")
    return SlotMap(tuple(primaries), tuple(owner))


async def read_slot_map(url: str, timeout: float) -> SlotMap:
    """The slot map from the first seed that answers and reports the cluster healthy."""
    credentials, _ = _split(url)
    errors: list[str] = []
    for seed in seed_urls(url):
        client = Redis.from_url(seed, socket_connect_timeout=timeout, protocol=2)
        try:
            async with asyncio.timeout(timeout):
                info = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    errors.append(f"{seed.rpartition('@')[2]}: cluster_state is not ok")
                    continue
                reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            return _slot_map(credentials, reply)
        except (RedisError, OSError, TimeoutError) as error:
            errors.append(f"{seed.rpartition('@')[2]}: {error!r}")
        finally:
            await client.aclose()
    raise ClusterUnavailable("no Redis Cluster seed serves every slot: " + "; ".join(errors))

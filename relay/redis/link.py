"""Every connection relay opens to Redis, on redis-py's asyncio client.

- `PipelinedLink` (cluster state, publishing): one connection; the commands issued during one event-loop
  iteration go out as one pipeline, executed by Redis in issue order. Retries and reconnection are off:
  a lost link stays lost and reports it, and its owner opens a new one.
- `open_pubsub` (the adapter's subscriptions): a PubSub on its own connection, same rules.
- `open_pool` (the webhook store's commands): a pool that reconnects by itself, for callers that simply
  retry on their next round; on a Redis Cluster, redis-py's cluster client, which follows MOVED and ASK.
- `open_blocking` (the webhook store's BLMOVE): one connection of its own, so a blocking command never
  holds a pooled connection, and closing it cuts the socket instead of waiting for the reply.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from relay.backoff import cancel_and_wait
from relay.redis.topology import describe_cluster, is_cluster_url, is_topology_error, seed_urls

logger = logging.getLogger(__name__)

Arg: TypeAlias = bytes | str | int | float
Command: TypeAlias = tuple[Arg, ...]

RedisReplyError: TypeAlias = ResponseError  # Redis answered a command with an error reply

MAX_BATCH: Final = 10_000  # commands per pipeline; the rest go in the next one
ARG_SECONDS: Final = 20e-6  # pipeline time allowed per argument, beyond the link's timeout (generous for Redis)


class RedisUnavailable(ConnectionError):
    """The link is closed, could not be opened, or Redis did not answer in time."""


def describe(url: str) -> str:
    """host:port, the socket path or a cluster's seeds, for logs (never the password)."""
    if is_cluster_url(url):
        return describe_cluster(url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def check_url(url: str) -> None:
    """Raise ValueError when redis-py cannot use `url` (every seed of a cluster URL)."""
    for each in seed_urls(url) if is_cluster_url(url) else [url]:
        parse_url(each)


def _connect_once(name: str) -> Callable[[AbstractConnection], Awaitable[None]]:
    """redis-py's handshake the first time; refuse afterwards, so a lost link stays lost."""
    connected = False

    async def connect(connection: AbstractConnection) -> None:
        nonlocal connected
        if connected:
            raise RedisConnectionError(f"{name} link to Redis was lost; the adapter opens a new session")
        await connection.on_connect()
        connected = True

    return connect


def open_client(url: str, name: str, timeout: float) -> Redis:
    """A client on one dedicated connection (not yet opened), with retries and reconnection off."""
    return Redis.from_url(
        url,
        max_connections=1,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        socket_connect_timeout=timeout,
        socket_timeout=None,  # PipelinedLink times whole pipelines; the pub/sub link waits forever
        socket_keepalive=True,
        health_check_interval=0,
        client_name=name,
        protocol=2,
        redis_connect_func=_connect_once(name),
    )


class PipelinedLink:
    """One connection; commands issued in one loop iteration go out as one pipeline, in order.

    `request_nowait` returns a future for the reply (ResponseError for an error reply,
    RedisUnavailable when the link breaks). When the link breaks, every waiting request fails
    and `on_lost` is called once.
    """

    def __init__(self, client: Redis, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout  # per pipeline: Redis stuck or gone past this
        self.on_lost: Callable[[BaseException], None] | None = None
        self.batches = 0  # pipelines executed, for tests and benchmarks
        self._client = client
        self._queue: list[tuple[Command, asyncio.Future[Any] | None]] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str, name: str, timeout: float) -> PipelinedLink:
        """Connect and handshake (AUTH, SELECT, CLIENT SETNAME); RedisUnavailable on failure."""
        client = open_client(url, name, timeout)
        try:
            async with asyncio.timeout(timeout):
                await client.execute_command(b"PING")  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as error:
            await client.aclose()
            raise RedisUnavailable(f"cannot open {name} link to Redis at {describe(url)}: {error!r}") from error
        link = cls(client, name, timeout)
        link._runner = asyncio.create_task(link._run(), name=f"redis-link-{name}")
        return link

    @property
    def is_open(self) -> bool:
        return not self._closed

    def request_nowait(self, *args: Arg) -> asyncio.Future[Any]:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed:
            waiter.set_exception(RedisUnavailable(f"{self.name} link to Redis is closed"))
            return waiter
        self._queue.append((args, waiter))
        self._wake.set()
        return waiter

    async def request(self, *args: Arg) -> Any:
        """Send a command and await its reply (the connection's read timeout bounds the wait)."""
        return await self.request_nowait(*args)

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Run `commands` as one pipeline now, outside the queue; replies or ResponseErrors, in order.

        For a caller that batches by itself (the publisher). Raises RedisUnavailable when the link breaks.
        """
        if self._closed:
            raise RedisUnavailable(f"{self.name} link to Redis is closed")
        try:
            replies = await self._pipeline(commands)
        except (RedisError, OSError, TimeoutError) as error:
            lost = RedisUnavailable(f"{self.name} link to Redis failed: {error!r}")
            self._lose(lost)
            raise lost from error
        for reply in replies:
            if isinstance(reply, ResponseError) and is_topology_error(reply):
                self._lose(RedisUnavailable(f"{self.name} link: the Redis Cluster slot map changed ({reply})"))
                break
        return replies

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        self.batches += 1
        # One timeout per pipeline, not redis-py's per read (socket_timeout): that costs per reply. It grows
        # with the arguments, so re-writing a big node's state after an outage is not taken for a dead Redis.
        budget = self.timeout + ARG_SECONDS * sum(len(args) for args in commands)
        async with asyncio.timeout(budget):
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _run(self) -> None:
        """Send what was queued during the last loop iteration as one pipeline; repeat."""
        while not self._closed:  # not only the cancel: redis-py can swallow it (relay.backoff.cancel_and_wait)
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                try:
                    replies = await self._pipeline([args for args, _ in batch])
                except asyncio.CancelledError:
                    self._fail(batch, RedisUnavailable(f"{self.name} link to Redis closed"))
                    raise
                except (RedisError, OSError, TimeoutError) as error:
                    lost = RedisUnavailable(f"{self.name} link to Redis failed: {error!r}")
                    self._fail(batch, lost)
                    self._lose(lost)
                    return
                moved: ResponseError | None = None
                for (_, waiter), reply in zip(batch, replies, strict=True):
                    if isinstance(reply, ResponseError):
                        if is_topology_error(reply):
                            moved = reply  # never from a single Redis
                        if waiter is not None and not waiter.done():
                            waiter.set_exception(reply)
                    elif waiter is not None and not waiter.done():
                        waiter.set_result(reply)
                if moved is not None:
                    # MOVED, ASK, TRYAGAIN or CLUSTERDOWN: like a lost link, so the next session reads the slot map.
                    self._lose(RedisUnavailable(f"{self.name} link: the Redis Cluster slot map changed ({moved})"))
                    return

    @staticmethod
    def _fail(batch: list[tuple[Command, asyncio.Future[Any] | None]], error: BaseException) -> None:
        for _, waiter in batch:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def _lose(self, error: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        queued, self._queue = self._queue, []
        self._fail(queued, error)
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            callback(error)

    async def close(self) -> None:
        """Stop sending, fail what is still waiting, close the connection. on_lost is not called."""
        self.on_lost = None
        self._lose(RedisUnavailable(f"{self.name} link to Redis closed"))
        if self._runner is not None:
            await cancel_and_wait([self._runner], self.timeout * 2)  # a runner stuck past it fails on aclose
            self._runner = None
        await self._client.aclose()


RedisClient: TypeAlias = Redis | RedisCluster  # what the webhook store talks to


def open_cluster(url: str, name: str, timeout: float) -> RedisCluster:
    """redis-py's cluster client on the seeds of a `redis+cluster://` URL: it follows MOVED/ASK by itself."""
    seeds = [parse_url(seed) for seed in seed_urls(url)]
    first = seeds[0]
    return RedisCluster(
        startup_nodes=[ClusterNode(str(seed.get("host", "127.0.0.1")), int(seed.get("port", 6379))) for seed in seeds],
        username=first.get("username"),
        password=first.get("password"),
        client_name=name,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        protocol=2,
    )


def open_pool(url: str, name: str, timeout: float) -> RedisClient:
    """A client on a pool of connections (opened on demand) that reconnects after an outage."""
    if is_cluster_url(url):
        return open_cluster(url, name, timeout)
    return Redis.from_url(url, client_name=name, socket_connect_timeout=timeout, socket_keepalive=True, protocol=2)


def open_blocking(url: str, name: str, timeout: float) -> RedisClient:
    """A client on one connection (opened on demand) for blocking commands; reconnects after an outage."""
    if is_cluster_url(url):
        return open_cluster(url, name, timeout)  # one connection per node, opened by the blocking command
    return Redis.from_url(
        url, max_connections=1, client_name=name, socket_connect_timeout=timeout, socket_keepalive=True, protocol=2
    )


async def close_now(client: RedisClient) -> None:
    """Close a client without waiting for replies still due (a blocking command's among them)."""
    if isinstance(client, Redis):
        await client.connection_pool.disconnect(inuse_connections=True)
    await client.aclose()


async def open_pubsub(
    url: str, name: str, timeout: float, first_channel: bytes, *, sharded: bool = False
) -> tuple[Redis, PubSub]:
    """A PubSub on its own connection, subscribed to `first_channel` (SSUBSCRIBE when `sharded`, on a
    Redis Cluster primary); RedisUnavailable on failure.

    No read timeout: the adapter's PING on this link notices a silent Redis.
    """
    client = open_client(url, name, timeout)
    pubsub = client.pubsub()
    try:
        async with asyncio.timeout(timeout):
            if sharded:
                await pubsub.ssubscribe(first_channel)
            else:
                await pubsub.subscribe(first_channel)
    except (RedisError, OSError, TimeoutError) as error:
        await pubsub.aclose()
        await client.aclose()
        raise RedisUnavailable(f"cannot open {name} link to Redis at {describe(url)}: {error!r}") from error
    return client, pubsub

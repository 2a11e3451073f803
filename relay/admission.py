"""Admission control: who may open a connection now, and how fast an app may call the HTTP API.

Token buckets (a rate per second, a burst of twice that), refilled lazily on each check: no timers, no
task. The client address comes from `X-Forwarded-For` only when the socket's peer is a trusted proxy
(Caddy, a load balancer), never from a header an arbitrary client could send. Everything here is
plain computation; transports and the HTTP API call it and answer with the protocol's codes.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

# Buckets kept for client addresses; past this the idlest half is forgotten (an attacker with many
# addresses costs bounded memory, and a forgotten address simply starts with a full bucket).
MAX_TRACKED_ADDRESSES: Final = 100_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second; 0 means unlimited
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate, burst(rate), now)

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        self.tokens = min(burst(self.rate), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self) -> float:
        """Seconds until the next token (for Retry-After)."""
        return 0.0 if self.rate <= 0 or self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


def burst(rate: float) -> float:
    """How many may come at once: two seconds' worth, at least one."""
    return max(1.0, rate * 2)


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`trusted_proxies` entries: addresses or CIDR blocks (raises ValueError naming a bad one)."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(networks)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the right-most address in
    X-Forwarded-For that is not itself a trusted proxy (proxies append, so the left part can be forged)."""
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not hop:
            continue
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class ConnectionAdmission:
    """Per node and per client address connection rates. `admit` answers None, or why not."""

    __slots__ = ("_clock", "_node", "_per_address", "_rate_per_address", "trusted")

    def __init__(
        self,
        rate_per_node: float,
        rate_per_address: float,
        trusted_proxies: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._node = TokenBucket.full(rate_per_node, clock())
        self._rate_per_address = rate_per_address
        self._per_address: dict[str, TokenBucket] = {}
        self.trusted = parse_networks(trusted_proxies)

    @property
    def per_address(self) -> bool:
        """Whether admit() reads the peer's address (a per-address rate is set)."""
        return self._rate_per_address > 0

    def admit(self, peer: str, forwarded_for: str | None) -> str | None:
        """None to accept; else the refusal reason ("rate_limited_ip" or "rate_limited_node")."""
        now = self._clock()
        if self._rate_per_address > 0:
            address = client_address(peer, forwarded_for, self.trusted)
            bucket = self._per_address.get(address)
            if bucket is None:
                if len(self._per_address) >= MAX_TRACKED_ADDRESSES:
                    self._forget_idlest()
                bucket = self._per_address[address] = TokenBucket.full(self._rate_per_address, now)
            if not bucket.take(now):
                return "rate_limited_ip"
        if not self._node.take(now):
            return "rate_limited_node"
        return None

    def _forget_idlest(self) -> None:
        ordered = sorted(self._per_address.items(), key=lambda item: item[1].updated)
        for address, _ in ordered[: len(ordered) // 2]:
            del self._per_address[address]


class ApiRateLimit:
    """HTTP API requests per second per app (`api_rate_limit`); 0 means unlimited."""

    __slots__ = ("_buckets", "_clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, app_id: str, rate: float) -> float | None:
        """None when the request may go on; else the seconds to wait before the next one will."""
        if rate <= 0:
            return None
        now = self._clock()
        bucket = self._buckets.get(app_id)
        if bucket is None or bucket.rate != rate:  # new app, or its limit changed on reload
            bucket = self._buckets[app_id] = TokenBucket.full(rate, now)
        if bucket.take(now):
            return None
        return max(bucket.wait(), 0.001)

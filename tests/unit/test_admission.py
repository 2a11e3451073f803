"""relay.admission: token buckets, the client address behind trusted proxies, and the limits built on them."""

from __future__ import annotations

import pytest

from relay.admission import ApiRateLimit, ConnectionAdmission, client_address, parse_networks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer cannot name another client
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "1.2.3.4, 198.51.100.1", "198.51.100.1"),  # the left part is the client's to forge
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # a second trusted proxy is skipped
        ("127.0.0.1", " , ", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_bad_trusted_proxy_entry_is_named() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks(["127.0.0.1", "not-an-ip"])


def test_per_address_burst_then_refusal_while_another_address_connects() -> None:
    clock = Clock()
    admission = ConnectionAdmission(0, 5, ["127.0.0.1"], clock)
    results = [admission.admit("198.51.100.1", None) for _ in range(12)]
    assert results[:10] == [None] * 10  # burst: two seconds' worth
    assert results[10:] == ["rate_limited_ip"] * 2
    assert admission.admit("198.51.100.2", None) is None
    # Behind the trusted proxy, each forwarded client has its own allowance.
    assert admission.admit("127.0.0.1", "198.51.100.3") is None
    assert admission.admit("127.0.0.1", "198.51.100.1") == "rate_limited_ip"
    clock.now += 0.2  # one token back at 5 per second
    assert admission.admit("198.51.100.1", None) is None
    assert admission.admit("198.51.100.1", None) == "rate_limited_ip"


def test_per_node_rate() -> None:
    clock = Clock()
    admission = ConnectionAdmission(2, 0, (), clock)
    assert [admission.admit(f"10.0.0.{n}", None) for n in range(5)] == [None] * 4 + ["rate_limited_node"]


def test_no_limits_by_default() -> None:
    admission = ConnectionAdmission(0, 0)
    assert all(admission.admit("127.0.0.1", None) is None for _ in range(10_000))


def test_api_rate_limit_gives_retry_after_and_follows_a_changed_limit() -> None:
    clock = Clock()
    limit = ApiRateLimit(clock)
    assert [limit.retry_after("1", 1) for _ in range(2)] == [None, None]
    wait = limit.retry_after("1", 1)
    assert wait is not None and 0 < wait <= 1
    assert limit.retry_after("2", 1) is None  # apps are limited separately
    assert limit.retry_after("1", 0) is None  # 0: unlimited
    assert limit.retry_after("1", 100) is None  # a new limit starts full

"""LoginThrottle: wrong console tokens per client address (relay/console/auth.py)."""

from __future__ import annotations

from relay.console.auth import FAILED_LOGIN_BURST, FAILED_LOGIN_RATE, MAX_TRACKED_LOGINS, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_few_wrong_tokens_then_one_try_per_interval() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(int(FAILED_LOGIN_BURST)):
        assert throttle.wait("10.0.0.1") == 0.0
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 1 / FAILED_LOGIN_RATE
    assert throttle.wait("10.0.0.2") == 0.0  # another address is not slowed down
    clock.now += 1 / FAILED_LOGIN_RATE
    assert throttle.wait("10.0.0.1") == 0.0  # one more try earned
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") > 0
    clock.now += 3600
    assert throttle.wait("10.0.0.1") == 0.0
    for _ in range(int(FAILED_LOGIN_BURST)):  # refilled to the burst, never beyond it
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") > 0


def test_memory_stays_bounded_whatever_the_number_of_addresses() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for n in range(MAX_TRACKED_LOGINS * 2):
        clock.now += 0.001
        throttle.failed(f"addr-{n}")
    assert throttle.tracked <= MAX_TRACKED_LOGINS
    assert throttle.wait(f"addr-{MAX_TRACKED_LOGINS * 2 - 1}") == 0.0  # the newest kept, with tries left

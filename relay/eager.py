"""Eager start: run a coroutine on the spot, without a task, until it first suspends.

A task costs ~5 us to create, schedule, step and discard; with the in-memory adapter an open, a
subscribe or an HTTP publish never suspends, so that task is pure overhead. Python 3.11 has no eager
task factory (3.12 does), hence this. The part run on the spot has no current task, so it must not use
`asyncio.timeout()` or `asyncio.current_task()`: only code behind an adapter that declares
`completes_synchronously` (relay.adapters.base) is started this way. Should such a coroutine suspend
after all, the rest runs in a task through the continuation `start_eagerly` returns, so nothing is lost.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Finished(Generic[T]):
    """A coroutine that ran to its end on the spot, and what it returned."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def start_eagerly(coroutine: Coroutine[Any, Any, T]) -> Finished[T] | Coroutine[Any, Any, T]:
    """Run `coroutine` until it first suspends: Finished when it ended there, else the continuation, which
    the caller must await (in a task). An exception raised on the spot propagates to the caller."""
    try:
        yielded = coroutine.send(None)
    except StopIteration as stop:
        return Finished(stop.value)
    return _continue(coroutine, yielded)


def run_now(coroutine: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any] | None:
    """start_eagerly for a coroutine whose result nobody reads: None when it is done."""
    started = start_eagerly(coroutine)
    return None if isinstance(started, Finished) else started


@types.coroutine
def _resume(coroutine: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """`yield from coroutine`, for a coroutine that already yielded `yielded` (PEP 380's expansion)."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:  # cancellation and timeouts go on into the coroutine
            try:
                yielded = coroutine.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def _continue(coroutine: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await _resume(coroutine, yielded)

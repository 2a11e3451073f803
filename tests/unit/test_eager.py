"""relay.eager: coroutines run on the spot until they first suspend, and go on in a task after that."""

from __future__ import annotations

import asyncio

import pytest

from relay.eager import Finished, run_now, start_eagerly


async def no_suspension(steps: list[str]) -> int:
    steps.append("ran")
    return 7


async def suspends(steps: list[str], gate: asyncio.Future[int]) -> int:
    steps.append("before")
    value = await gate
    steps.append("after")
    return value * 2


async def test_a_coroutine_that_never_suspends_finishes_on_the_spot() -> None:
    steps: list[str] = []
    started = start_eagerly(no_suspension(steps))
    assert isinstance(started, Finished)
    assert (started.value, steps) == (7, ["ran"])
    assert run_now(no_suspension(steps)) is None
    assert steps == ["ran", "ran"]


async def test_a_suspended_coroutine_goes_on_in_a_task() -> None:
    steps: list[str] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    started = start_eagerly(suspends(steps, gate))
    assert not isinstance(started, Finished)
    assert steps == ["before"]  # the part up to the first await ran here
    task = asyncio.ensure_future(started)
    await asyncio.sleep(0)
    gate.set_result(21)
    assert await task == 42
    assert steps == ["before", "after"]


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    steps: list[str] = []

    async def cleanup_on_cancel(gate: asyncio.Future[None]) -> None:
        try:
            await gate
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = start_eagerly(cleanup_on_cancel(gate))
    assert not isinstance(started, Finished)
    task = asyncio.ensure_future(started)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["cancelled"]
    assert gate.cancelled()


async def test_an_exception_on_the_spot_reaches_the_caller() -> None:
    async def fails() -> None:
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        start_eagerly(fails())

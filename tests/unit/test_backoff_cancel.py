"""relay.backoff.stop_if_cancelled: a retry loop ends when its task is cancelled, even when the library it
calls turns the CancelledError into an ordinary error (as redis-py can during a command)."""

from __future__ import annotations

import asyncio

import pytest

from relay.backoff import stop_if_cancelled


async def _library_call() -> None:
    try:
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        raise ConnectionError("Connection closed by server") from None  # what the library does


async def _retry_loop(guarded: bool, attempts: list[int], running: list[bool]) -> None:
    while running:  # without the guard, a cancelled task would go round this loop for ever
        try:
            await _library_call()
        except Exception:
            attempts.append(1)
            if guarded:
                stop_if_cancelled()
            await asyncio.sleep(0.01)


async def test_a_guarded_loop_ends_when_cancelled() -> None:
    attempts: list[int] = []
    task = asyncio.create_task(_retry_loop(True, attempts, [True]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert attempts == [1]

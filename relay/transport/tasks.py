"""The lean transport's tasks in flight: kept so they are not collected, and awaited at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class TaskSet:
    """Opens, subscribes, disconnects and slow publishes of every lean connection on one loop."""

    __slots__ = ("loop", "tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: set[asyncio.Task[Any]] = set()

    def __bool__(self) -> bool:
        return bool(self.tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def start(
        self, coroutine: Coroutine[Any, Any, Any], done: Callable[[asyncio.Task[Any]], None]
    ) -> asyncio.Task[Any]:
        """A task whose one done callback, `done`, must call forget(): one callback per task, not two."""
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(done)
        return task

    def forget(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)

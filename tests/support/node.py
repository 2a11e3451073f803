"""Node scripts as asyncio subprocesses that print one JSON object per line and read commands on stdin.

The scripts (tests/clients/js/) take their parameters as JSON in argv[2], exit on their own
after `timeout_ms`, and exit when stdin closes, so none outlives the test that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .process import ProcessError, require_binary
from .timeouts import STOP_TIMEOUT, TIMEOUT, scaled

Line = dict[str, Any]

# How long a script may live at most; it ends itself after this even if the test hangs.
SCRIPT_LIFETIME = scaled(90.0)


class NodeClient:
    """One running Node script. Lines it prints are kept in `seen`, oldest first."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.seen: list[Line] = []
        self._claimed: set[int] = set()
        self._stderr: list[str] = []
        self._stdout_closed = False
        self._changed = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._read_stdout(), name=f"{name}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{name}-stderr"),
        ]

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            try:
                parsed = json.loads(text)
                line: Line = parsed if isinstance(parsed, dict) else {"type": "raw", "text": text}
            except json.JSONDecodeError:
                line = {"type": "raw", "text": text}
            async with self._changed:
                self.seen.append(line)
                self._changed.notify_all()
        async with self._changed:
            self._stdout_closed = True
            self._changed.notify_all()  # wake waiters so they notice the exit

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip("\n"))

    def _find(self, predicate: Callable[[Line], bool]) -> int | None:
        for index, line in enumerate(self.seen):
            if index not in self._claimed and predicate(line):
                return index
        return None

    async def expect(
        self,
        predicate: Callable[[Line], bool] | None = None,
        *,
        timeout: float = TIMEOUT,
        claim: bool = True,
        **fields: Any,
    ) -> Line:
        """The oldest line not returned before that has all `fields` and satisfies `predicate`.

        Waits up to `timeout` for it; fails the test with everything the script printed when
        it does not come or the script exits first. A returned line is claimed: later calls
        skip it, so expecting the same line shape twice needs two such lines. `claim=False`
        waits for a line without claiming it.
        """

        def matches(line: Line) -> bool:
            if any(line.get(key) != value for key, value in fields.items()):
                return False
            return predicate is None or predicate(line)

        async def wait_for_match() -> int:
            async with self._changed:
                while True:
                    index = self._find(matches)
                    if index is not None:
                        return index
                    if self._stdout_closed:
                        raise AssertionError(self._report("closed stdout (exited) before a line matching", fields))
                    await self._changed.wait()

        try:
            async with asyncio.timeout(timeout):
                index = await wait_for_match()
        except TimeoutError:
            raise AssertionError(self._report(f"no line within {timeout:.1f}s matching", fields)) from None
        if claim:
            self._claimed.add(index)
        return self.seen[index]

    def seen_before(self, line: Line) -> list[Line]:
        """Every line printed before `line` (a line returned by expect())."""
        for index, candidate in enumerate(self.seen):
            if candidate is line:
                return self.seen[:index]
        raise ValueError("line was not printed by this client")

    def _report(self, problem: str, fields: Mapping[str, Any]) -> str:
        seen = "\n".join(json.dumps(line) for line in self.seen) or "(nothing)"
        stderr = "\n".join(self._stderr[-40:]) or "(nothing)"
        return f"{self.name}: {problem} {fields}\n--- stdout ---\n{seen}\n--- stderr ---\n{stderr}"

    async def send(self, command: Mapping[str, Any]) -> None:
        """Write one JSON command line to the script's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Close stdin (the script exits on EOF), then SIGTERM and SIGKILL by PID if it lingers."""
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.process.stdin.close()
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if self.process.returncode is not None:
                break
            if signum is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signum)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout / 2):
                    await self.process.wait()
        await self.process.wait()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(timeout):
                    await reader
        return self.process.returncode if self.process.returncode is not None else -1


async def start_node(script: Path, params: Mapping[str, Any], name: str | None = None) -> NodeClient:
    """Run `node <script> <params as JSON>` with tests/clients/node_modules next to the script's package."""
    node = require_binary("node", "install Node.js 20 (the machine image has it)")
    package_dir = _package_dir(script)
    if not (package_dir / "node_modules").is_dir():
        raise ProcessError(f"{package_dir}/node_modules is missing; run `npm ci` there (scripts/test does)")
    full_params = {"timeout_ms": int(SCRIPT_LIFETIME * 1000), **params}
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        json.dumps(full_params),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=package_dir,
        limit=2**22,  # a whole presence member list can sit on one line
    )
    return NodeClient(name or script.stem, process)


def _package_dir(script: Path) -> Path:
    for parent in script.resolve().parents:
        if (parent / "package.json").is_file():
            return parent
    raise ProcessError(f"no package.json above {script}")

"""A child process that tests start, watch through its log file, and always stop by PID."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .timeouts import STARTUP_TIMEOUT, STOP_TIMEOUT

# Readiness checks are polled: an external process gives us nothing to await, so we ask
# it again after this short pause until the deadline passes.
_POLL_INTERVAL = 0.05


_PR_SET_PDEATHSIG = 1
# Resolved here, not in the forked child, so the child only makes one system call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test runner itself is killed (so no teardown
    runs), the kernel SIGKILLs this child too and no server outlives the run. Linux only."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessError(RuntimeError):
    """A helper process is missing, died, or did not become ready in time."""


def require_binary(name: str, hint: str) -> str:
    """Absolute path of executable `name`; raises (so the test fails, never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise ProcessError(f"{name} is not installed or not on PATH; {hint}")
    return path


class ManagedProcess:
    """A subprocess with stdout+stderr going to `log_path`.

    stop() sends SIGTERM and waits, then SIGKILL; kill() sends SIGKILL at once. Both signal
    only this process's own PID and are safe to call more than once. Start it from the main
    thread: the kernel kills it when the thread that started it ends.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self.spawn()

    def spawn(self) -> None:
        """Start the process (again, after stop() or kill(), with the same argv and log)."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_text(self) -> str:
        """Everything the process printed so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll `ready()` until it returns True; fail early if the process exits, or at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ProcessError(
                    f"{self.name} exited with code {self.returncode} before {what}; "
                    f"argv={self.argv}\n--- log tail ---\n{self.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise ProcessError(
                    f"{self.name} did not reach '{what}' within {timeout:.1f}s; "
                    f"argv={self.argv}\n--- log tail ---\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code (None if never started)."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._popen.wait()
        return self._popen.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (a crash, as far as peers can tell). Returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal(signal.SIGKILL)
            self._popen.wait()
        return self._popen.returncode

    def send_signal(self, signum: signal.Signals) -> None:
        """Send `signum` to this process only, without waiting (tests of a server's own signal handling)."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        self._signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit code once the process ends by itself; SIGKILL and ProcessError when it outlives `timeout`."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessError(
                f"{self.name} did not exit within {timeout:.1f}s\n--- log tail ---\n{self.log_tail()}"
            ) from None

    def _signal(self, signum: signal.Signals) -> None:
        assert self._popen is not None
        try:
            os.kill(self._popen.pid, signum)
        except ProcessLookupError:
            pass  # exited between poll() and kill(); wait() reaps it

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        pid = self._popen.pid if self._popen is not None else None
        return f"<{type(self).__name__} {self.name} pid={pid} {state}>"

"""CPU time and resident memory of a process and its descendants, read from /proc.

Used for the server under test and for the generator's own processes alike, so both are measured
the same way.
"""

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (relay --workers, node's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # Fields after the parenthesised command name; utime and stime are 14 and 15.
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            continue
    return total


@dataclass(frozen=True, slots=True)
class CoreTime:
    """Seconds the given cores spent running processes, in interrupts (irq + softirq: on loopback
    much of TCP's receive path), and stolen by the hypervisor, from /proc/stat."""

    tasks: float
    interrupts: float
    steal: float


def core_time(cores: Iterable[int]) -> CoreTime:
    wanted = {f"cpu{c}".encode() for c in cores}
    tasks = interrupts = steal = 0
    with open("/proc/stat", "rb") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in wanted:
                user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(x) for x in fields[1:9])
                tasks += user + nice + system
                interrupts += irq + softirq
                steal += stolen
    return CoreTime(tasks / CLK_TCK, interrupts / CLK_TCK, steal / CLK_TCK)


@dataclass(frozen=True, slots=True)
class Usage:
    """What a set of processes used over one measurement window. cpu_pct is of one core.
    On the cores these processes are pinned to (all 0 unpinned): others_pct, what other processes
    ran there (on a machine shared with other jobs, the share the server did not get);
    interrupts_pct, irq and softirq time, which the kernel charges to no process (on loopback
    it includes TCP work for the server's own connections); steal_pct, the hypervisor's."""

    cpu_pct: float
    rss_end: int
    rss_peak: int
    seconds: float
    others_pct: float = 0.0
    interrupts_pct: float = 0.0
    steal_pct: float = 0.0


class Sampler:
    """Measures CPU over a window and samples RSS every `interval` seconds to find its peak."""

    def __init__(
        self, root_pids: Iterable[int], interval: float = 0.25, descend: bool = True, cores: Iterable[int] = ()
    ) -> None:
        self.root_pids = list(root_pids)
        self.cores = list(cores)
        self.core0 = CoreTime(0.0, 0.0, 0.0)
        # The generator's parent process is also the servers' parent: it must not descend.
        self.descend = descend
        self.interval = interval
        self.pids: list[int] = []
        self.cpu0 = 0.0
        self.t0 = 0.0
        self.peak = 0
        self.task: asyncio.Task[None] | None = None

    def _refresh(self) -> list[int]:
        if self.descend:
            self.pids = [p for root in self.root_pids for p in descendants(root)]
        else:
            self.pids = list(self.root_pids)
        return self.pids

    def start(self) -> None:
        self.cpu0 = cpu_seconds(self._refresh())
        self.core0 = core_time(self.cores)
        self.t0 = time.monotonic()
        self.peak = rss_bytes(self.pids)
        self.task = asyncio.create_task(self._sample(), name="rss-sampler")

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.peak = max(self.peak, rss_bytes(self.pids))

    async def stop(self) -> Usage:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        seconds = time.monotonic() - self.t0
        # CPU of processes that exited mid-window is lost; the sets measured here are stable.
        cpu = cpu_seconds(self.pids) - self.cpu0
        rss = rss_bytes(self.pids)
        window = max(seconds, 1e-9)
        if not self.cores:
            return Usage(100.0 * cpu / window, rss, max(self.peak, rss), seconds)
        now, was = core_time(self.cores), self.core0
        others = max(0.0, now.tasks - was.tasks - cpu)
        return Usage(
            100.0 * cpu / window,
            rss,
            max(self.peak, rss),
            seconds,
            100.0 * others / window,
            100.0 * (now.interrupts - was.interrupts) / window,
            100.0 * (now.steal - was.steal) / window,
        )

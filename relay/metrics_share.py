"""One scrape for the whole process under `--workers N`: workers share their samples through files.

The workers share one port (SO_REUSEPORT), so a scrape reaches any one of them. Each worker writes its
families to `<dir>/<pid>.json` once a second and again right before it answers a scrape; the answering
worker adds up every worker's file. Counters and histograms of a worker that died are folded into
`retired.json` by the parent (so totals never go backwards); its gauges are dropped. This is the
scheme of prometheus-client's multiprocess mode, kept to whole snapshots so the socket path still only
adds to plain ints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson
from prometheus_client.core import Metric

from relay.metrics import Merge, Metrics

# The environment variable through which the parent tells its workers where to write.
METRICS_DIR_ENV: Final = "RELAY_METRICS_DIR"
RETIRED: Final = "retired.json"
WRITE_INTERVAL: Final = 1.0

Snapshot = list[dict[str, Any]]
_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def _snapshot(families: Iterable[Metric], modes: dict[str, Merge]) -> Snapshot:
    return [
        {
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "merge": modes.get(family.name, "sum"),
            "samples": [[sample.name, sample.labels, sample.value] for sample in family.samples],
        }
        for family in families
    ]


def _write_atomically(path: Path, snapshot: Snapshot) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(snapshot))
    os.replace(temporary, path)


def _read(path: Path) -> Snapshot:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []  # a worker that is just being replaced: its figures come back with its next write
    return data if isinstance(data, list) else []


def merge_snapshots(snapshots: Iterable[Snapshot]) -> list[Metric]:
    """Adds counters and histograms; gauges combine by their family's merge mode."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_SampleKey, float]] = {}
    modes: dict[str, str] = {}
    for snapshot in snapshots:
        for entry in snapshot:
            name = entry["name"]
            if name not in families:
                families[name] = Metric(name, entry["help"], entry["type"])
                values[name] = {}
                modes[name] = entry["merge"] if entry["type"] == "gauge" else "sum"
            merged = values[name]
            for sample_name, labels, value in entry["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                previous = merged.get(key)
                merged[key] = value if previous is None else _combine(modes[name], previous, value)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def _combine(mode: str, previous: float, value: float) -> float:
    if mode == "min":
        return min(previous, value)
    if mode == "max":
        return max(previous, value)
    return previous + value


class WorkerShare:
    """This worker's side: writes its snapshot, and merges everyone's when it answers a scrape."""

    def __init__(self, directory: Path, metrics: Metrics, pid: int | None = None) -> None:
        self._directory = directory
        self._metrics = metrics
        self._path = directory / f"{pid or os.getpid()}.json"
        self._task: asyncio.Task[None] | None = None

    def write(self, families: list[Metric] | None = None) -> None:
        metrics = self._metrics
        _write_atomically(self._path, _snapshot(families or metrics.families(), metrics.merge_modes()))

    def __call__(self, families: list[Metric]) -> list[Metric]:
        self.write(families)
        snapshots = [_read(path) for path in sorted(self._directory.glob("*.json"))]
        return merge_snapshots(snapshots)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write_loop(), name="relay-metrics-share")

    async def _write_loop(self) -> None:
        while True:
            try:
                self.write()
            except OSError:
                pass  # the directory went away (the parent is stopping); the next scrape says so
            await asyncio.sleep(WRITE_INTERVAL)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def retire_worker(directory: Path, pid: int) -> None:
    """In the parent, once worker `pid` has exited: keep its counters and histograms, drop its gauges."""
    path = directory / f"{pid}.json"
    dead = [entry for entry in _read(path) if entry["type"] != "gauge"]
    if dead:
        retired = merge_snapshots([_read(directory / RETIRED), dead])
        _write_atomically(directory / RETIRED, _snapshot(retired, {}))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

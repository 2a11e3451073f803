"""Result records, latency percentiles, the one-line summaries and the relay/soketi ratio lines."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Metric = float | int | str | bool


@dataclass(slots=True)
class Result:
    server: str
    scenario: str
    metrics: dict[str, Metric]
    line: str
    # Metric keys worth a ratio against the other server, with whether higher is better.
    ratios: dict[str, bool] = field(default_factory=dict)
    # Per-step records (fan-out max), kept for the JSON file only.
    details: list[dict[str, Metric]] = field(default_factory=list)
    error: str = ""


def percentiles(latencies_us: array[int] | Sequence[int]) -> dict[str, float]:
    """p50/p99/max in milliseconds; zeros when nothing arrived."""
    if not latencies_us:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(latencies_us)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000.0

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": ordered[-1] / 1000.0}


def fmt_rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def fmt_mb(value: float) -> str:
    return f"{value / 2**20:.0f} MB"


def format_line(result: Result, width: int = 22) -> str:
    name = f"{result.server:<13} {result.scenario:<{width}}"
    if result.error:
        return f"{name} FAILED: {result.error}"
    return f"{name} {result.line}"


def ratio_lines(results: Iterable[Result], numerator: str = "relay", denominator: str = "soketi") -> list[str]:
    by_key = {(r.server, r.scenario): r for r in results}
    lines = []
    for (server, scenario), num in by_key.items():
        if server != numerator or num.error:
            continue
        den = by_key.get((denominator, scenario))
        if den is None or den.error:
            continue
        parts = []
        for key, higher_is_better in num.ratios.items():
            a, b = num.metrics.get(key), den.metrics.get(key)
            if (
                isinstance(a, bool)
                or isinstance(b, bool)
                or not isinstance(a, int | float)
                or not isinstance(b, int | float)
            ):
                continue
            if b == 0:
                parts.append(f"{key} {a:g} vs 0")
                continue
            better = "higher is better" if higher_is_better else "lower is better"
            parts.append(f"{key} {a / b:.2f}x ({better})")
        if parts:
            lines.append(f"ratio {numerator + '/' + denominator:<20} {scenario:<22} " + ", ".join(parts))
    return lines

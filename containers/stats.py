"""Memory and CPU use of a running app, from the engine's one-shot stats (what `docker stats` shows,
without its two-sample wait: the CPU rate comes from two of our own passes). The engine is asked
rather than the cgroup files, because a daemon started in a network namespace (`ip netns exec`)
sees a fresh /sys without the cgroup mounts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    memory_bytes: int | None  # in use, page cache left out (as `docker stats` counts it)
    cpu_ns: int | None  # CPU time used since the container started


def parse(doc: Mapping[str, Any]) -> Sample:
    """The engine's stats document -> Sample; fields it lacks (or that make no sense) are None."""
    mem = doc.get("memory_stats") or {}
    usage = mem.get("usage")
    memory = None
    if isinstance(usage, int) and usage >= 0:
        detail = mem.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
        memory = usage - cache if isinstance(cache, int) and 0 <= cache <= usage else usage
    total = ((doc.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    cpu = total if isinstance(total, int) and total >= 0 else None
    return Sample(memory, cpu)


def cpu_percent(before: tuple[float, int], after: tuple[float, int]) -> float | None:
    """CPU use between two (monotonic seconds, cpu_ns) readings, in percent of one core."""
    dt = after[0] - before[0]
    used = after[1] - before[1]
    if dt <= 0 or used < 0:
        return None
    return round(100.0 * used / 1e9 / dt, 2)

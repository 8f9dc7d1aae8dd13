"""Memory and CPU use of a running app, read from its cgroup (what `docker stats` reads too, without
the engine's two-sample wait). cgroup v2 (memory.current, cpu.stat) and v1 (memory, cpuacct)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Sample:
    memory_bytes: int | None
    cpu_ns: int | None  # CPU time used since the container started


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_v2(directory: Path) -> int | None:
    try:
        for line in (directory / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
    except (OSError, ValueError):
        pass
    return None


def sample(pid: int, root: Path = ROOT) -> Sample:
    """The cgroup counters of process ``pid``; fields are None when they cannot be read."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return Sample(None, None)
    v1: dict[str, str] = {}
    v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and path:
            v2 = path
        for c in controllers.split(","):
            v1[c] = path
    memory = cpu = None
    if "memory" in v1:
        memory = _read_int(root / "memory" / v1["memory"].lstrip("/") / "memory.usage_in_bytes")
    if "cpuacct" in v1:
        for mount in ("cpuacct", "cpu,cpuacct"):
            cpu = _read_int(root / mount / v1["cpuacct"].lstrip("/") / "cpuacct.usage")
            if cpu is not None:
                break
    if v2 is not None and (memory is None or cpu is None):
        for base in (root, root / "unified"):
            d = base / v2.lstrip("/")
            memory = memory if memory is not None else _read_int(d / "memory.current")
            cpu = cpu if cpu is not None else _cpu_v2(d)
    return Sample(memory, cpu)


def cpu_percent(before: tuple[float, int], after: tuple[float, int]) -> float | None:
    """CPU use between two (monotonic seconds, cpu_ns) readings, in percent of one core."""
    dt = after[0] - before[0]
    used = after[1] - before[1]
    if dt <= 0 or used < 0:
        return None
    return round(100.0 * used / 1e9 / dt, 2)

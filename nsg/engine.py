"""The desired-state engine: one DesiredState in, each subsystem's ``set(part)`` called in a declared
order (tailscale ``wgengine.Reconfig``). A part equal to the one last set is not set again ("no
changes") unless the caller forces it (the periodic resync forces the subsystems that verify the
kernel). A failure rolls back, in reverse order, the subsystems this call already changed, to the
parts they had before; the failing subsystem undoes its own half-done work."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("nsg.engine")


class SubsystemError(Exception):
    """A subsystem could not take its part (a local fault: the kernel, a file, a process refused)."""

    def __init__(self, subsystem: str, message: str, changes: Changes | None = None):
        super().__init__(message)
        self.subsystem = subsystem
        self.message = message
        self.changes = changes  # what it did (and undid) before failing, if it knows


@dataclass(frozen=True)
class Changes:
    """What one subsystem's set() did: operations made, things held back (a port that is not there yet)."""

    ops: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    rolled_back: bool = False  # the subsystem undid its own half-done work
    duration_ms: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.ops)


NO_CHANGES = Changes()


class Subsystem(Protocol):
    """``set`` takes the whole part and is idempotent. A subsystem may also have ``unchanged()``,
    called when the engine skipped its part as equal to the last one (it counts a no-op)."""

    name: str

    async def set(self, part: Any) -> Changes: ...


@dataclass(frozen=True)
class EngineResult:
    changes: tuple[tuple[str, Changes], ...] = ()  # (subsystem, what it did), in the order set
    skipped: tuple[str, ...] = ()  # parts equal to the last set: "no changes"
    error: SubsystemError | None = None
    rolled_back: tuple[str, ...] = ()  # subsystems put back to their previous parts, in that order
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.error is None

    def of(self, name: str) -> Changes:
        return next((c for n, c in self.changes if n == name), NO_CHANGES)


class Engine:
    def __init__(self, order: list[Subsystem]):
        names = [s.name for s in order]
        if len(set(names)) != len(names):
            raise ValueError(f"subsystem names repeat: {names}")
        self.order = list(order)
        self.last: dict[str, Any] = {}  # name -> the part last set successfully

    async def set(self, state: Any, force: frozenset[str] = frozenset()) -> EngineResult:
        """``state``: an object with one attribute per subsystem name (nsg.compose.DesiredState)."""
        done: list[tuple[str, Changes]] = []
        skipped: list[str] = []
        changed: list[tuple[Subsystem, Any, bool]] = []  # (subsystem, previous part, had one)
        for sub in self.order:
            part = getattr(state, sub.name)
            had = sub.name in self.last
            previous = self.last.get(sub.name)
            if had and previous == part and sub.name not in force:
                skipped.append(sub.name)
                unchanged = getattr(sub, "unchanged", None)  # optional: counts its "no changes"
                if unchanged is not None:
                    unchanged()
                continue
            try:
                result = await sub.set(part)
            except SubsystemError as exc:
                if exc.changes is not None:
                    done.append((sub.name, exc.changes))
                # the failing one first (whatever it left half done), then the others in reverse
                failed = [(sub, previous, had)] if previous != part or not had else []
                rolled = await self._rollback(changed + failed)
                return EngineResult(tuple(done), tuple(skipped), exc, rolled)
            self.last[sub.name] = part
            done.append((sub.name, result))
            if not had or previous != part:
                changed.append((sub, previous, had))
        return EngineResult(tuple(done), tuple(skipped))

    async def _rollback(self, changed: list[tuple[Subsystem, Any, bool]]) -> tuple[str, ...]:
        rolled: list[str] = []
        for sub, previous, had in reversed(changed):
            if not had:  # nothing was set before this call: nothing to go back to
                self.last.pop(sub.name, None)
                continue
            try:
                await sub.set(previous)
            except SubsystemError as exc:
                log.error("rollback of %s failed: %s", sub.name, exc.message)
                self.last.pop(sub.name, None)  # unknown state: the next set goes through
                continue
            self.last[sub.name] = previous
            rolled.append(sub.name)
        return tuple(rolled)

    def forget(self, name: str) -> None:
        """The next set() of ``name`` goes through whatever the part (its object was replaced)."""
        self.last.pop(name, None)


EVENT_KINDS = frozenset({"reload", "lease", "evpn", "resync", "renewed", "confirm-timeout", "tunnel-up"})


@dataclass(frozen=True)
class Event:
    """Something the daemon's main loop acts on: an input changed (a lease, the EVPN RIB, a config
    file, a renewed LDevID), the resync timer, the commit-confirm window, an IKE SA came up."""

    kind: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event {self.kind!r}")

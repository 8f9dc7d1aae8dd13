"""Apply a whole desired state idempotently; roll back to the last good one on failure.

The full path reads the kernel (snapshot), plans, applies. The incremental path, for the many small
changes the EVPN control plane makes (a MAC here, a flood entry there), skips the snapshot when only
FDB, neighbour and route entries differ from the last state applied in full or incrementally: it
applies exactly that difference. Should any of those operations fail (the kernel drifted from what
we think it holds), it falls back to the full path, which reads the kernel and repairs it; the
periodic resync is always a full pass (ApplyResult.full says which path ran: the dataplane
subsystem bounds the time between two full passes with it).

A full pass with a flood of remote entries installed reads them all back (two FDB entries and a
neighbour per remote MAC+IP): the netlink adapter asks the kernel for the owned devices' entries
only and keeps compact values (nsg/dataplane/netlink.py), so a resync of 10,000 routes costs a few
MB for the snapshot, not the whole tables as pyroute2 messages (~80 MB before).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from nsg.dataplane.errors import DataplaneError
from nsg.dataplane.planner import fdb_key, neigh_key, plan
from nsg.dataplane.types import (
    AddFdb,
    AddNeigh,
    AddRoute,
    DelFdb,
    DelNeigh,
    DelRoute,
    Desired,
    Op,
    Snapshot,
)

log = logging.getLogger("nsg.dataplane")


class Kernel(Protocol):
    def snapshot(self) -> Snapshot: ...
    def apply(self, op: Op) -> None: ...


def _run(kernel: Kernel, ops: list[Op] | tuple[Op, ...], done: list[str]) -> None:
    """Apply in order, appending each applied operation to ``done``; a kernel with ``apply_many``
    (the netlink adapter pipelines FDB and neighbour requests) gets them all at once."""
    many = getattr(kernel, "apply_many", None)
    if many is None:
        for op in ops:
            kernel.apply(op)
            done.append(str(op))
        return
    try:
        many(ops)
    except DataplaneError as exc:
        applied = exc.applied if exc.applied is not None else frozenset()
        done.extend(str(op) for i, op in enumerate(ops) if i in applied)
        raise
    done.extend(str(op) for op in ops)


@dataclass(frozen=True)
class ApplyResult:
    changes: tuple[str, ...]
    waiting: tuple[str, ...] = ()
    error: str | None = None
    rolled_back: bool = False
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)
    full: bool = False  # the kernel was read (snapshot) and the whole state planned against it

    @property
    def ok(self) -> bool:
        return self.error is None


class Reconciler:
    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.last_good: Desired | None = None
        self._waiting = False

    def apply_incremental(self, desired: Desired) -> ApplyResult:
        """Apply the entry-level difference from the last good state; the full path if it cannot."""
        t0 = time.monotonic()
        ops = self._delta(desired)
        if ops is None:
            return self.apply(desired)
        done: list[str] = []
        try:
            _run(self.kernel, ops, done)
        except DataplaneError as exc:
            log.warning("incremental apply failed, reconciling in full",
                        extra={"fields": {"error": str(exc), "done": len(done)}})
            full = self.apply(desired)
            return ApplyResult(tuple(done) + full.changes, full.waiting, full.error, full.rolled_back,
                               (time.monotonic() - t0) * 1000, full=True)
        self.last_good = desired
        return ApplyResult(tuple(done), (), None, False, (time.monotonic() - t0) * 1000)

    def _delta(self, desired: Desired) -> list[Op] | None:
        last = self.last_good
        if last is None or self._waiting:
            return None
        if (last.links, last.ports, last.up, last.mtus, last.addrs) != (
                desired.links, desired.ports, desired.up, desired.mtus, desired.addrs):
            return None
        return [
            *(DelRoute(r) for r in sorted(last.routes - desired.routes)),
            *(DelNeigh(n) for n in sorted(last.neighbors - desired.neighbors, key=neigh_key)),
            *(DelFdb(f) for f in sorted(last.fdb - desired.fdb, key=fdb_key)),
            *(AddFdb(f) for f in sorted(desired.fdb - last.fdb, key=fdb_key)),
            *(AddNeigh(n) for n in sorted(desired.neighbors - last.neighbors, key=neigh_key)),
            *(AddRoute(r) for r in sorted(desired.routes - last.routes)),
        ]

    def apply(self, desired: Desired) -> ApplyResult:
        t0 = time.monotonic()
        p = plan(desired, self.kernel.snapshot())
        self._waiting = bool(p.waiting)  # something held back: the next change takes the full path too
        done: list[str] = []
        try:
            _run(self.kernel, p.ops, done)
        except DataplaneError as exc:
            log.error("apply failed, rolling back", extra={"fields": {"error": str(exc), "done": len(done)}})
            rolled = self._rollback()
            return ApplyResult(
                tuple(done), p.waiting, str(exc), rolled, (time.monotonic() - t0) * 1000, full=True
            )
        self.last_good = desired
        return ApplyResult(tuple(done), p.waiting, None, False, (time.monotonic() - t0) * 1000, full=True)

    def _rollback(self) -> bool:
        """Drive the kernel back to the last desired state that applied cleanly."""
        if self.last_good is None:
            return False
        try:
            _run(self.kernel, plan(self.last_good, self.kernel.snapshot()).ops, [])
        except DataplaneError as exc:
            log.error("rollback failed", extra={"fields": {"error": str(exc)}})
            return False
        return True

    def flush(self) -> ApplyResult:
        """Remove everything nsg owns."""
        result = self.apply(Desired())
        self.last_good = None
        return result

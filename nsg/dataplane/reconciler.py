"""Apply a whole desired state idempotently; roll back to the last good one on failure."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from nsg.dataplane.errors import DataplaneError
from nsg.dataplane.planner import plan
from nsg.dataplane.types import Desired, Op, Snapshot

log = logging.getLogger("nsg.dataplane")


class Kernel(Protocol):
    def snapshot(self) -> Snapshot: ...
    def apply(self, op: Op) -> None: ...


@dataclass(frozen=True)
class ApplyResult:
    changes: tuple[str, ...]
    waiting: tuple[str, ...] = ()
    error: str | None = None
    rolled_back: bool = False
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.error is None


class Reconciler:
    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.last_good: Desired | None = None

    def apply(self, desired: Desired) -> ApplyResult:
        t0 = time.monotonic()
        p = plan(desired, self.kernel.snapshot())
        done: list[str] = []
        try:
            for op in p.ops:
                self.kernel.apply(op)
                done.append(str(op))
        except DataplaneError as exc:
            log.error("apply failed, rolling back", extra={"fields": {"error": str(exc), "done": len(done)}})
            rolled = self._rollback()
            return ApplyResult(
                tuple(done), p.waiting, str(exc), rolled, (time.monotonic() - t0) * 1000
            )
        self.last_good = desired
        return ApplyResult(tuple(done), p.waiting, None, False, (time.monotonic() - t0) * 1000)

    def _rollback(self) -> bool:
        """Drive the kernel back to the last desired state that applied cleanly."""
        if self.last_good is None:
            return False
        try:
            for op in plan(self.last_good, self.kernel.snapshot()).ops:
                self.kernel.apply(op)
        except DataplaneError as exc:
            log.error("rollback failed", extra={"fields": {"error": str(exc)}})
            return False
        return True

    def flush(self) -> ApplyResult:
        """Remove everything nsg owns."""
        result = self.apply(Desired())
        self.last_good = None
        return result

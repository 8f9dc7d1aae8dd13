"""The dataplane subsystem: nsg.dataplane.reconciler.Reconciler, in a worker thread (netlink)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import Desired
from nsg.engine import Changes, SubsystemError

FULL_EVERY_S = 30.0  # at most this long between two full passes (reads of the kernel), however busy


class DataplaneSubsystem:
    """A new Desired that differs from the last one only in FDB, neighbour and route entries (what
    the EVPN RIB changes) takes the incremental path, which skips reading the whole kernel (the
    reconciler falls back to a full pass when it cannot). The same Desired again (a forced resync)
    is a full pass: it reads the kernel and repairs drift. So is any set once the last full pass is
    ``full_every`` seconds old: under a steady trickle of EVPN changes every set differs from the
    last one, and a resync that comes with a change would go incremental too, so without this bound
    drift would never be repaired. ``lock``: held while the kernel is used (status reads the kernel
    too). ``clock``: monotonic seconds (tests pass their own)."""

    name = "dataplane"

    def __init__(self, reconciler: Reconciler, lock: asyncio.Lock | None = None,
                 full_every: float = FULL_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.reconciler = reconciler
        self.lock = lock or asyncio.Lock()
        self.full_every = full_every
        self.clock = clock
        self.last: Desired | None = None
        self.last_full = False  # the last set was a full pass (for tests and logs)
        self.full_at: float | None = None  # when the last full pass started (clock)

    async def set(self, part: Desired) -> Changes:
        started = self.clock()
        full = part == self.last or (self.full_at is not None and started - self.full_at >= self.full_every)
        fn = self.reconciler.apply if full else self.reconciler.apply_incremental
        async with self.lock:
            result = await asyncio.to_thread(fn, part)
        self.last_full = result.full
        if result.full:
            self.full_at = started
        changes = Changes(result.changes, result.waiting, result.rolled_back, result.duration_ms)
        if not result.ok:
            self.last = None  # whatever the kernel holds now, the next pass is a full one
            raise SubsystemError(self.name, str(result.error), changes)
        self.last = part
        return changes

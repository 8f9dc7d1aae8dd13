"""The dataplane subsystem: nsg.dataplane.reconciler.Reconciler, in a worker thread (netlink)."""

from __future__ import annotations

import asyncio

from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import Desired
from nsg.engine import Changes, SubsystemError


class DataplaneSubsystem:
    """A new Desired that differs from the last one only in FDB, neighbour and route entries (what
    the EVPN RIB changes) takes the incremental path, which skips reading the whole kernel (the
    reconciler falls back to a full pass when it cannot). The same Desired again (a forced resync)
    is a full pass: it reads the kernel and repairs drift. ``lock``: held while the kernel is used
    (status reads the kernel too)."""

    name = "dataplane"

    def __init__(self, reconciler: Reconciler, lock: asyncio.Lock | None = None):
        self.reconciler = reconciler
        self.lock = lock or asyncio.Lock()
        self.last: Desired | None = None
        self.last_full = False  # the last set was a full pass (for tests and logs)

    async def set(self, part: Desired) -> Changes:
        full = part == self.last
        fn = self.reconciler.apply if full else self.reconciler.apply_incremental
        async with self.lock:
            result = await asyncio.to_thread(fn, part)
        self.last_full = full
        changes = Changes(result.changes, result.waiting, result.rolled_back, result.duration_ms)
        if not result.ok:
            self.last = None  # whatever the kernel holds now, the next pass is a full one
            raise SubsystemError(self.name, str(result.error), changes)
        self.last = part
        return changes

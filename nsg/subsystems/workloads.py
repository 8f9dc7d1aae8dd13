"""The workloads subsystem: nsg.workloads.Workloads (apps' and VMs' supervisors)."""

from __future__ import annotations

from nsg.compose import WorkloadsPart
from nsg.engine import NO_CHANGES, Changes
from nsg.workloads import Workloads


class WorkloadsSubsystem:
    """The supervisors reconcile in their own passes; this hands them the specs."""

    name = "workloads"

    def __init__(self, workloads: Workloads):
        self.workloads = workloads

    async def set(self, part: WorkloadsPart) -> Changes:
        if not self.workloads.set(dict(part.apps), dict(part.vms)):
            return NO_CHANGES
        return Changes((f"set {len(part.apps)} apps, {len(part.vms)} vms (mtu {part.mtu})",))

"""The gateway's tenant VMs: config -> VmSpecs -> containers.vm, on the same supervision loop as apps.

A VM's TAP is a port of its subnet's bridge, so its MAC is learned there and EVPN announces it like
any LAN host's. VMs outlive daemon restarts (the next daemon adopts them, containers/vm.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from containers.vm import VmSpec
from nsg.app_supervisor import Supervisor
from nsg.dataplane.desired import bridge_name
from nsg.model import GatewayConfig
from nsg.model.status import VmsStatus, VmStatus


def vm_specs(cfg: GatewayConfig, mtu: int) -> dict[str, VmSpec]:
    out = {}
    for vm in cfg.vms:
        subnet = next(s for s in cfg.subnets if s.name == vm.subnet)  # the config model checked it
        out[vm.name] = VmSpec(
            name=vm.name, bridge=bridge_name(subnet.vni), address=f"{vm.address}/{subnet.cidr.prefixlen}",
            gateway=str(subnet.gateway), mtu=mtu, kernel_url=vm.kernel.url, kernel_sha256=vm.kernel.sha256,
            initrd_url=vm.initrd.url if vm.initrd else None, initrd_sha256=vm.initrd.sha256 if vm.initrd else None,
            append=vm.append, memory_mb=vm.memory_mb, cpus=vm.cpus, accel=vm.accel)
    return out


class VmSupervisor(Supervisor):
    kind = "vms"

    def __init__(self, state_dir: Path, interval: float = 2.0, *, cache: Path | None = None,
                 tls: Callable | None = None, on_change: Callable[[], None] | None = None):
        from containers.vm import Vms

        super().__init__(interval, on_change)
        self.runner = Vms(state_dir, cache=cache, tls=tls)

    def _pass(self, expected: bool) -> None:
        self.counters["passes"] += 1
        res = self.runner.apply(self.desired)
        self._account(res.changes, res.errors, expected)
        self.state = {name: {"state": r.state, "pid": r.pid or None, "restarts": r.restarts, "attached": r.attached,
                             "since": r.since}
                      for name, r in self.runner.actual(self.desired).items()}

    def workloads(self) -> list[VmStatus]:
        return [VmStatus(name=n, address=s.address, bridge=s.bridge, tap=s.tap, mac=s.mac,
                         kernel=urlparse(s.kernel_url).path.rsplit("/", 1)[-1], accel=s.accel,
                         **self.state.get(n, {"state": "absent"}), error=self.last["errors"].get(n))
                for n, s in sorted(self.desired.items())]

    def status(self) -> VmsStatus:
        return VmsStatus(vms=self.workloads(), counters=dict(self.counters), last_pass=self.last["at"])

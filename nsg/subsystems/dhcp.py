"""The DHCP subsystem: one nsg.uplinks.dhcp.DhcpClient per uplink in mode "dhcp"; it keeps the leases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from nsg.compose import DhcpPart
from nsg.engine import NO_CHANGES, Changes
from nsg.uplinks.lease import Lease


class DhcpSubsystem:
    """``on_lease(uplink)``: a lease came, changed or went (the daemon makes it an event and composes
    again); ``on_error(uplink, message)``: a client's error, counted and logged by the daemon.
    ``client_factory``: nsg.uplinks.dhcp.DhcpClient, or a fake."""

    name = "dhcp"

    def __init__(self, state_dir: Path, on_lease: Callable[[str], None], on_error: Callable[[str, str], None],
                 client_factory: Callable | None = None):
        self.state_dir = state_dir
        self.on_lease = on_lease
        self.on_error = on_error
        self.client_factory = client_factory
        self.clients: dict = {}  # uplink name -> client
        self.leases: dict[str, Lease] = {}

    def _lease(self, uplink: str, lease: Lease | None) -> None:
        if self.leases.get(uplink) == lease:
            return
        if lease is None:
            self.leases.pop(uplink, None)
        else:
            self.leases[uplink] = lease
        self.on_lease(uplink)

    def leases_for(self, uplinks: dict[str, str]) -> dict[str, Lease]:
        """The leases of the clients that run on the interface ``uplinks`` (name -> interface) names:
        a lease got on an uplink's previous interface is not composed onto its new one."""
        return {n: lease for n, lease in self.leases.items()
                if n in self.clients and self.clients[n].interface == uplinks.get(n)}

    async def set(self, part: DhcpPart) -> Changes:
        wanted = dict(part.uplinks)
        ops = []
        for name in list(self.clients):
            if wanted.get(name) != self.clients[name].interface:
                client = self.clients.pop(name)
                self.leases.pop(name, None)
                asyncio.get_running_loop().create_task(client.stop())
                ops.append(f"stop dhcp {name} {client.interface}")
        if wanted:
            factory = self.client_factory
            if factory is None:
                from nsg.uplinks.dhcp import DhcpClient, write_hook

                hook = write_hook(self.state_dir)

                def factory(name, ifname, lease, error):
                    return DhcpClient(name, ifname, hook, lease, error)

            for name, ifname in wanted.items():
                if name not in self.clients:
                    client = factory(name, ifname, self._lease, self.on_error)
                    self.clients[name] = client
                    client.start()
                    ops.append(f"start dhcp {name} {ifname}")
        return Changes(tuple(ops)) if ops else NO_CHANGES

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.stop()

"""The EVPN subsystem: nsg.evpn.control.EvpnControl (BGP toward the config's peers, the RIB) and the
bridges' neighbour watch (local MACs and IPs to announce)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nsg.compose import EvpnPart, EvpnView
from nsg.engine import NO_CHANGES, Changes, SubsystemError


class EvpnSubsystem:
    """``rib_changed``: called when the RIB changed what the kernel should hold (the daemon queues an
    event and composes again with view()); nothing here calls into the daemon otherwise. Without an
    evpn section (part.config None) a speaker already running is left as it is."""

    name = "evpn"

    def __init__(self, rib_changed: Callable[[], None], on_alert: Callable | None = None):
        self.rib_changed = rib_changed
        self.on_alert = on_alert  # EVPN's security alerts (duplicate MAC, route limits)
        self.control = None  # EvpnControl once a config had an evpn section
        self.watch = None  # NeighWatch

    def view(self) -> EvpnView | None:
        c = self.control
        return None if c is None else EvpnView(c.fdb(), c.neighbors(), c.routes(), devices=c.devices)

    def kick(self) -> None:
        """An IKE SA came up: the BGP sessions over it try to connect now."""
        if self.control is not None:
            self.control.kick()

    async def set(self, part: EvpnPart) -> Changes:
        if part.config is None:
            return NO_CHANGES
        ops = []
        if self.control is None:
            from nsg.evpn.control import EvpnControl
            from nsg.evpn.rib import EvpnRib

            self.control = EvpnControl(EvpnRib(), self.rib_changed, on_alert=self.on_alert)
            ops.append("start evpn")
        try:
            self.control.apply(part.config, part.local_ip)
        except ValueError as exc:
            raise SubsystemError(self.name, f"evpn: {exc}") from None
        ops.append(f"evpn peers {len(part.config.evpn.peers) if part.config.evpn else 0} local {part.local_ip}")
        if self.watch is None:
            from nsg.evpn.watch import NeighWatch

            loop = asyncio.get_running_loop()
            control = self.control
            self.watch = NeighWatch(lambda vnis, events: loop.call_soon_threadsafe(control.on_local, vnis, events))
        self.watch.set_bridges(dict(part.bridges))
        return Changes(tuple(ops))

    async def stop(self) -> None:
        if self.watch is not None:
            await asyncio.to_thread(self.watch.stop)
        if self.control is not None:
            await self.control.stop()

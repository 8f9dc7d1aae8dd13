"""The ESP engine and IKE subsystems: one nsg.tunnels.Tunnels shared through a TunnelSlot. The engine
(its TUN) starts before the dataplane routes peers into it; IKE starts, follows the config or stops
once the dataplane is in place."""

from __future__ import annotations

from collections.abc import Callable

from nsg.compose import EspEnginePart, IkePart
from nsg.engine import NO_CHANGES, Changes, SubsystemError
from nsg.tunnels import TunnelConfigError, Tunnels


class TunnelSlot:
    """``on_established(peer)``: an IKE SA came up (the daemon queues an event: EVPN connects now)."""

    def __init__(self, on_established: Callable[[str], None] | None = None,
                 factory: Callable[[], Tunnels] = Tunnels):
        self.on_established = on_established
        self.factory = factory
        self.tunnels: Tunnels | None = None

    async def stop(self) -> None:
        if self.tunnels is not None:
            await self.tunnels.stop()
            self.tunnels = None


class EspEngineSubsystem:
    name = "esp_engine"

    def __init__(self, slot: TunnelSlot):
        self.slot = slot

    async def set(self, part: EspEnginePart) -> Changes:
        t = self.slot.tunnels
        if part.enabled:
            if t is not None:
                return NO_CHANGES
            assert part.ipsec is not None
            t = self.slot.factory()
            try:
                t.start_engine(part.ipsec, part.kernel_esp)
            except OSError as exc:
                await t.stop()
                raise SubsystemError(self.name, f"esp engine: {exc}") from None
            self.slot.tunnels = t
            return Changes((f"start esp engine ({t.backend})",))
        if t is not None and t.manager is None:
            # an engine without IKE: only a rolled-back start leaves one; IKE's stop covers the rest
            await self.slot.stop()
            return Changes(("stop esp engine",))
        return NO_CHANGES


class IkeSubsystem:
    """The peerings authenticate with the credentials the part carries (loaded by the daemon when it
    took the config, again after an LDevID renewal): nothing is read from disk here."""

    name = "ike"

    def __init__(self, slot: TunnelSlot):
        self.slot = slot

    async def set(self, part: IkePart) -> Changes:
        t = self.slot.tunnels
        if not part.enabled:
            if t is None:
                return NO_CHANGES
            await self.slot.stop()
            return Changes(("stop tunnels",))
        if t is None or part.config is None:
            raise SubsystemError(self.name, "ike: the ESP engine is not running")
        if part.credentials is None:
            raise SubsystemError(self.name, "ike: no credentials were loaded for this config")
        try:
            if t.manager is None:
                if self.slot.on_established is not None:
                    t.on_established = self.slot.on_established
                await t.start_ike(part.config, part.local_ip, part.credentials)
                return Changes((f"start ike ({len(part.config.peers)} peers, local {part.local_ip})",))
            t.apply(part.config, part.local_ip, part.credentials)
        except TunnelConfigError as exc:
            raise SubsystemError(self.name, str(exc)) from None
        return Changes((f"apply ike ({len(part.config.peers)} peers, local {part.local_ip})",))

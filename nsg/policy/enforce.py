"""The daemon's enforcement of a config's `policy` (nftables) and `qos` (tc + nftables): made on first
need, applied in worker threads (subprocesses and netlink), reported for `nsg status` and telemetry."""

from __future__ import annotations

import asyncio
import json
import logging

from nsg.model import GatewayConfig
from nsg.model.status import GuardStatus, PolicyStatus, PortGuardStatus, QosStatus
from nsg.policy import guard as guard_mod
from nsg.policy import port_guard as pg
from nsg.policy.apply import BridgeNetfilter, NftPolicy, PolicyApplyError, nft_text, table_counters
from nsg.policy.nft import PolicyRenderError
from nsg.policy.port_guard_apply import NftPortGuard
from nsg.policy.qos_apply import TcQos
from nsg.policy.tc import QosPlan

log = logging.getLogger("nsg.policy")


class EnforcementError(Exception):
    """nft or tc refused what we asked (local fault); the message names the part (guard, policy, qos)."""


class Enforcement:
    def __init__(self) -> None:
        self.policy: NftPolicy | None = None  # once a config had a policy
        self.qos: TcQos | None = None  # once a config had QoS
        self.guard: guard_mod.Guard | None = None  # the input guard in force (table inet nsg_guard)
        self.guard_state = {"applied": 0, "noop": 0, "errors": 0, "last_error": None}
        # bridge-nf-call-iptables: on while the firewall or the QoS limiters need it (both share this)
        self.bridge_nf = BridgeNetfilter()
        self.port_guard = NftPortGuard()  # table bridge nsg_port: LAN port MAC limits, overlay frame guard

    def _guard_present(self) -> bool:
        out = json.loads(nft_text(None, "list", "tables", guard_mod.FAMILY) or "{}")
        return any(o.get("table", {}).get("name") == guard_mod.TABLE for o in out.get("nftables", []))

    async def set_guard(self, want: guard_mod.Guard, verify: bool = False) -> bool:
        """The box's own input guard, before anything else of a config: True if it was (re)written.
        Raises EnforcementError (then the config is refused; the guard in force stays)."""
        try:
            if want == self.guard and (not verify or await asyncio.to_thread(self._guard_present)):
                self.guard_state["noop"] += 1
                return False
            await asyncio.to_thread(nft_text, guard_mod.render(want))
        except PolicyApplyError as exc:
            self.guard_state["errors"] += 1
            self.guard_state["last_error"] = str(exc)
            log.error("input guard not applied: %s", exc)
            raise EnforcementError(f"input guard: {exc}") from None
        if self.guard is not None and verify and want == self.guard:
            log.warning("input guard was missing from the kernel: put back")
        self.guard = want
        self.guard_state["applied"] += 1
        self.guard_state["last_error"] = None
        log.info("input guard applied", extra={"fields": {"uplinks": list(want.uplinks), "peers": len(want.peers),
                                                           "overlay_protected": want.protected}})
        return True

    def count_noop(self, part: str) -> None:
        """The engine found ``part`` ("guard", "policy", "qos") unchanged: counted like a pass that
        changed nothing (nsg status shows it)."""
        if part == "guard" and self.guard is not None:
            self.guard_state["noop"] += 1
        elif part == "policy" and self.policy is not None:
            self.policy.state.noop += 1
        elif part == "qos" and self.qos is not None:
            self.qos.state.noop += 1

    async def guard_status(self) -> GuardStatus | None:
        """What the guard lets in and what it dropped (read from the kernel now, in a worker thread)."""
        if self.guard is None:
            return None
        counted = await asyncio.to_thread(table_counters, guard_mod.FAMILY, guard_mod.TABLE)
        g = self.guard
        return GuardStatus(**self.guard_state, overlay_protected=g.protected, uplinks=list(g.uplinks),
                           overlay_peers=list(g.peers), services=[f"{p}/{n}" for p, n in g.services],
                           dropped={k: counted.get(k, {"packets": 0, "bytes": 0}) for k in guard_mod.COUNTERS})

    async def remove_guard(self) -> None:
        if self.guard is None:
            return
        try:
            await asyncio.to_thread(nft_text, guard_mod.remove_document())
        except PolicyApplyError as exc:
            log.error("flush: %s", exc)
        self.guard = None

    async def set_port_guard(self, want: pg.PortGuard, verify: bool = False) -> bool:
        """LAN port security and the overlay frame guard (table bridge nsg_port): True if it was
        (re)written. Raises EnforcementError (the table in force stays)."""
        try:
            changed = await asyncio.to_thread(self.port_guard.set, want, verify)
        except PolicyApplyError as exc:
            log.error("port guard not applied: %s", exc)
            raise EnforcementError(str(exc)) from None
        if changed:
            log.info("port guard applied", extra={"fields": {
                "lan_ports": [p.name for p in want.ports], "overlays": [o.name for o in want.overlays]}})
        return changed

    async def port_guard_status(self) -> PortGuardStatus | None:
        """MACs held per LAN port and drops by reason (read from the kernel now, in a worker thread)."""
        st = await asyncio.to_thread(self.port_guard.status)
        return None if st is None else PortGuardStatus.model_validate(st)

    async def set_policy(self, cfg: GatewayConfig | None, uplinks: dict[str, str], verify: bool = False) -> bool:
        """``cfg``: the config whose policy is wanted (None: no policy). True if the kernel changed.
        Raises EnforcementError (the firewall in force stays)."""
        want = cfg is not None and cfg.policy is not None
        if not want and self.policy is None:
            return False
        if self.policy is None:
            self.policy = NftPolicy(self.bridge_nf)
        try:
            if not want:
                changed = await asyncio.to_thread(self.policy.remove)
            else:
                changed = await asyncio.to_thread(self.policy.apply_config, cfg, uplinks, verify=verify)
        except (PolicyApplyError, PolicyRenderError) as exc:
            log.error("policy not applied: %s", exc)
            raise EnforcementError(f"policy: {exc}") from None
        if changed:
            log.info("policy applied", extra={"fields": {"counters": len(self.policy.state.counters)}})
        return bool(changed)

    async def set_qos(self, wanted: QosPlan | None) -> bool:
        """``wanted``: the tc plan (None: no shaping). True if the kernel changed. Raises EnforcementError."""
        if wanted is None and self.qos is None:
            return False
        if self.qos is None:
            self.qos = TcQos(self.bridge_nf)
        try:
            if wanted is None:
                changed = await asyncio.to_thread(self.qos.remove)
            else:
                changed = await asyncio.to_thread(self.qos.apply, wanted)
                if changed:
                    log.info("qos applied", extra={"fields": {"shaped": self.qos.state.shaped}})
        except PolicyApplyError as exc:
            log.error("qos not applied: %s", exc)
            raise EnforcementError(f"qos: {exc}") from None
        return bool(changed)

    async def qos_status(self) -> QosStatus | None:
        """Per shaped device and class: bytes, packets, drops, overlimits (read now, in a worker thread:
        pyroute2 cannot run on the event loop's thread)."""
        if self.qos is None:
            return None
        st = self.qos.state
        return QosStatus(applied=st.applied, noop=st.noop, errors=st.errors, last_error=st.last_error,
                         shaped=st.shaped, waiting=st.waiting, classes=await asyncio.to_thread(self.qos.stats))

    async def policy_status(self) -> PolicyStatus | None:
        """Per-rule hit counters (read from the kernel now, in a worker thread) and the apply counters."""
        if self.policy is None:
            return None
        st = self.policy.state
        return PolicyStatus(applied=st.applied, noop=st.noop, errors=st.errors, last_error=st.last_error,
                            counters=await asyncio.to_thread(self.policy.counters))

    async def flush(self) -> None:
        """Our nft tables, qdiscs and ifbs go (--flush-on-exit)."""
        await self.remove_guard()
        try:
            await asyncio.to_thread(self.port_guard.remove)
        except PolicyApplyError as exc:
            log.error("flush: %s", exc)
        for part in (self.policy, self.qos):
            if part is not None:
                try:
                    await asyncio.to_thread(part.remove)
                except PolicyApplyError as exc:
                    log.error("flush: %s", exc)

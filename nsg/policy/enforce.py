"""The daemon's enforcement of a config's `policy` (nftables) and `qos` (tc + nftables): made on first
need, applied in worker threads (subprocesses and netlink), reported for `nsg status` and telemetry."""

from __future__ import annotations

import asyncio
import logging

from nsg.model import GatewayConfig
from nsg.policy.apply import NftPolicy, PolicyApplyError
from nsg.policy.nft import PolicyRenderError
from nsg.policy.qos_apply import TcQos
from nsg.policy.tc import plan

log = logging.getLogger("nsg.policy")


class Enforcement:
    def __init__(self) -> None:
        self.policy: NftPolicy | None = None  # once a config had a policy
        self.qos: TcQos | None = None  # once a config had QoS

    async def sync_policy(self, cfg: GatewayConfig, verify: bool = False) -> str | None:
        """None, or why the firewall could not be put in place (the one in force stays)."""
        if cfg.policy is None and self.policy is None:
            return None
        if self.policy is None:
            self.policy = NftPolicy()
        try:
            if cfg.policy is None:
                changed = await asyncio.to_thread(self.policy.remove)
            else:
                uplinks = {u.name: u.interface for u in cfg.uplinks}
                changed = await asyncio.to_thread(self.policy.apply_config, cfg, uplinks, verify=verify)
        except (PolicyApplyError, PolicyRenderError) as exc:
            log.error("policy not applied: %s", exc)
            return f"policy: {exc}"
        if changed:
            log.info("policy applied", extra={"fields": {"counters": len(self.policy.state.counters)}})
        return None

    async def sync_qos(self, cfg: GatewayConfig) -> str | None:
        """None, or why the shaping could not be put in place."""
        if cfg.qos is None and self.qos is None:
            return None
        if self.qos is None:
            self.qos = TcQos()
        try:
            if cfg.qos is None:
                await asyncio.to_thread(self.qos.remove)
            else:
                wanted = plan(cfg, {u.name: u.interface for u in cfg.uplinks})
                if await asyncio.to_thread(self.qos.apply, wanted):
                    log.info("qos applied", extra={"fields": {"shaped": self.qos.state.shaped}})
        except PolicyApplyError as exc:
            log.error("qos not applied: %s", exc)
            return f"qos: {exc}"
        return None

    async def qos_status(self) -> dict | None:
        """Per shaped device and class: bytes, packets, drops, overlimits (read now, in a worker thread:
        pyroute2 cannot run on the event loop's thread)."""
        if self.qos is None:
            return None
        st = self.qos.state
        return {"applied": st.applied, "noop": st.noop, "errors": st.errors, "last_error": st.last_error,
                "shaped": st.shaped, "waiting": st.waiting, "classes": await asyncio.to_thread(self.qos.stats)}

    async def policy_status(self) -> dict | None:
        """Per-rule hit counters (read from the kernel now, in a worker thread) and the apply counters."""
        if self.policy is None:
            return None
        st = self.policy.state
        return {"applied": st.applied, "noop": st.noop, "errors": st.errors, "last_error": st.last_error,
                "counters": await asyncio.to_thread(self.policy.counters)}

    async def flush(self) -> None:
        """Our nft tables, qdiscs and ifbs go (--flush-on-exit)."""
        for part in (self.policy, self.qos):
            if part is not None:
                try:
                    await asyncio.to_thread(part.remove)
                except PolicyApplyError as exc:
                    log.error("flush: %s", exc)

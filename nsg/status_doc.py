"""The status document (`nsg status`, nsg.model.status.GatewayStatus), put together from the daemon's
parts: the running config, one snapshot of what the kernel holds, and each subsystem's own typed
status. The sections derived from the config and the snapshot are pure functions (table-tested);
gateway_status() does the reads (the kernel, nft counters) and assembles the document."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from nsg import __version__
from nsg.dataplane.desired import bridge_name, vxlan_name
from nsg.dataplane.types import Snapshot
from nsg.engine import EngineResult
from nsg.model import GatewayConfig
from nsg.model.status import (
    ConfigSummary,
    DeviceStatus,
    EvpnStatus,
    GatewayStatus,
    LastApply,
    PeerStatus,
    SubnetStatus,
    UplinkStatus,
)
from nsg.uplinks.lease import Lease

MAX_OPS_SHOWN = 100  # operations listed in the log and in status per apply (all are counted)


class StatusSource(Protocol):
    """What the daemon (nsg.daemon.Daemon) offers to its status: its own state and its parts, each
    of which reports a typed status (nsg.model.status)."""

    config: GatewayConfig | None
    config_path: Path | None
    generation: int
    started_at: float
    last_apply: LastApply | None
    last_reload_error: str | None
    counters: dict[str, int]
    leases: Mapping[str, Lease]
    tunnels: Any  # nsg.tunnels.Tunnels | None
    channel: Any  # nsg.channel.client.ChannelClient | None
    zerotouch: Any  # nsg.zerotouch.ZeroTouch | None
    evpn: Any  # nsg.evpn.control.EvpnControl | None
    workloads: Any  # nsg.workloads.Workloads
    enforce: Any  # nsg.policy.enforce.Enforcement
    confirm: Any  # nsg.confirm.CommitConfirm
    alerts: Any  # nsg.alerts.Alerts
    upgrades: Any  # nsg.subsystems.upgrade.UpgradeSubsystem

    async def kernel_snapshot(self) -> Snapshot: ...


def last_apply(generation: int, reason: str, result: EngineResult) -> LastApply:
    """One compose + engine pass as `nsg status` shows it: the dataplane's operations (a big change,
    10,000 EVPN routes, is not kept op by op), what waits, the subsystems changed, skipped ("no
    changes"), failed and rolled back."""
    dp = result.of("dataplane")
    return LastApply(
        generation=generation, reason=reason, changes=list(dp.ops[:MAX_OPS_SHOWN]), waiting=list(dp.waiting),
        error=str(result.error) if result.error is not None else None,
        rolled_back=dp.rolled_back or bool(result.rolled_back), duration_ms=dp.duration_ms, at=result.at,
        changes_made=len(dp.ops), failed=result.error.subsystem if result.error is not None else None,
        subsystems={n: len(c.ops) for n, c in result.changes}, skipped=list(result.skipped),
        rolled_back_subsystems=list(result.rolled_back))


def config_summary(cfg: GatewayConfig, path: Path | None, generation: int) -> ConfigSummary:
    return ConfigSummary(path=str(path), generation=generation, config_generation=cfg.generation,
                         system_ip=str(cfg.system_ip), transport=cfg.transport)


def uplinks(cfg: GatewayConfig, leases: Mapping[str, Lease]) -> list[UplinkStatus]:
    """Each uplink's address and gateway: the static ones, else its lease's ("" without a lease)."""
    out = []
    for u in cfg.uplinks:
        lease = leases.get(u.name)
        out.append(UplinkStatus(name=u.name, interface=u.interface, mode=u.mode,
                                address=str(u.address or (lease.address if lease else "")),
                                gateway=str(u.gateway or (lease.gateway if lease else ""))))
    return out


def subnets(cfg: GatewayConfig) -> list[SubnetStatus]:
    return [SubnetStatus(name=s.name, vni=s.vni, cidr=str(s.cidr), gateway=str(s.gateway), bridge=bridge_name(s.vni),
                         vxlan=vxlan_name(s.vni), ports=list(s.ports)) for s in cfg.subnets]


def peers(cfg: GatewayConfig) -> list[PeerStatus]:
    return [PeerStatus(name=p.name, system_ip=str(p.system_ip), endpoint=str(p.endpoint)) for p in cfg.peers]


def devices(cfg: GatewayConfig, snap: Snapshot) -> list[DeviceStatus]:
    """The links nsg owns and the LAN ports the config names that the kernel has, by name."""
    ours = {n for n, link in snap.links.items() if link.owned}
    ports = {p for s in cfg.subnets for p in s.ports}
    out = []
    for name in sorted(ours | (ports & set(snap.links))):
        link = snap.links[name]
        out.append(DeviceStatus(name=name, kind=link.kind, mtu=link.mtu, up=link.up, master=link.master,
                                vni=link.vxlan.vni if link.vxlan else None, owned=link.owned))
    return out


def fdb(snap: Snapshot) -> list[str]:
    return sorted(f"{f.ifname} {f.mac} master" if f.master else f"{f.ifname} {f.mac} dst {f.dst}" for f in snap.fdb)


def neighbors(snap: Snapshot) -> list[str]:
    return sorted(f"{n.ifname} {n.ip} lladdr {n.mac}" for n in snap.neighbors)


async def gateway_status(d: StatusSource, now: float | None = None, monotonic: float | None = None) -> GatewayStatus:
    """The whole document; ``now``/``monotonic``: the clocks (uptime, the commit-confirm window)."""
    now = time.time() if now is None else now
    monotonic = time.monotonic() if monotonic is None else monotonic
    channel = d.channel.status() if d.channel else None
    bootstrap = d.zerotouch.status() if d.zerotouch else None
    cfg = d.config
    if cfg is None:  # still bootstrapping or waiting for the controller: the short document
        return GatewayStatus(version=__version__, pid=os.getpid(), last_apply=None, channel=channel,
                             counters=dict(d.counters), last_reload_error=d.last_reload_error, bootstrap=bootstrap,
                             upgrade=d.upgrades.status())
    # Every read that waits (the kernel, nft, tc) comes first; the daemon's own state is then taken
    # with no await in between, so it is one moment's (a converge cannot finish half-way through it).
    snap = await d.kernel_snapshot()
    guard, port_guard = await d.enforce.guard_status(), await d.enforce.port_guard_status()
    policy, qos = await d.enforce.policy_status(), await d.enforce.qos_status()
    cfg = d.config
    assert cfg is not None  # only a config is ever installed in place of another, never None
    work = d.workloads.status()
    return GatewayStatus(
        version=__version__,
        pid=os.getpid(),
        uptime_s=round(now - d.started_at, 1),
        config=config_summary(cfg, d.config_path, d.generation),
        uplinks=uplinks(cfg, d.leases),
        subnets=subnets(cfg),
        peers=peers(cfg),
        devices=devices(cfg, snap),
        fdb=fdb(snap),
        neighbors=neighbors(snap),
        tunnels=d.tunnels.status() if d.tunnels else None,
        channel=d.channel.status() if d.channel else None,
        bootstrap=d.zerotouch.status() if d.zerotouch else None,
        # EvpnControl.status() gives an EvpnStatus (a dict before nsg/evpn/ moved to it: both validate)
        evpn=EvpnStatus.model_validate(d.evpn.status()) if d.evpn else None,
        apps=work.apps,
        vms=work.vms,
        guard=guard,
        port_guard=port_guard,
        alerts=d.alerts.status(),
        policy=policy,
        qos=qos,
        last_apply=d.last_apply,
        commit_confirm=d.confirm.status(monotonic),
        upgrade=d.upgrades.status(),
        last_reload_error=d.last_reload_error,
        counters=dict(d.counters),
    )

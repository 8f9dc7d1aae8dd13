"""Human rendering of the daemon's status document (`nsg status`; `--json` gives the document).

The first line is the verdict, like `tailscale status`: "OK: ..." when every tunnel is up, the
channel is connected and the last apply worked; otherwise "DEGRADED: " and what is wrong. The
document (the daemon's JSON, or the model itself) is read through nsg.model.status.GatewayStatus.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from nsg.model.status import (
    AlertsStatus,
    BootstrapStatus,
    ChannelStatus,
    ChildSaStatus,
    GatewayStatus,
    GuardStatus,
    PortGuardStatus,
    TunnelsStatus,
)
from nsg.model.upgrade import UpgradeState

MAX_REASON = 160  # characters of one problem on the verdict line


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def _doc(st: GatewayStatus | Mapping[str, Any]) -> GatewayStatus:
    return GatewayStatus.model_validate(st)


def verdict(st: GatewayStatus | Mapping[str, Any]) -> str:
    doc = _doc(st)
    good: list[str] = []
    problems: list[str] = []
    boot = doc.bootstrap
    if doc.config is None:
        why = ""
        if boot:
            why = f" (bootstrap {boot.state}, attempt {boot.attempts}"
            why += f": {boot.last_error})" if boot.last_error else ")"
        problems.append("no config yet" + why)
    elif boot and boot.state != "done":
        problems.append(f"bootstrap {boot.state}" + (f": {boot.last_error}" if boot.last_error else ""))
    ike = doc.tunnels.ike if doc.tunnels else []
    if ike:
        for p in ike:
            if p.up:
                continue
            sa = p.ike_sa
            state = "down" if not sa or sa.state == "closed" else f"not up (IKE {sa.state})"
            why = f" ({p.last_error})" if p.last_error else ""
            problems.append(f"tunnel to {p.peer} {state}{why}")
        good.append(f"{sum(p.up for p in ike)}/{len(ike)} tunnels up")
    ch = doc.channel
    if ch:
        if ch.connected:
            good.append("channel connected")
        else:
            problems.append("channel down" + (f" ({ch.last_error})" if ch.last_error else ""))
    for addr, peer in (doc.evpn.peers if doc.evpn else {}).items():
        if peer.state != "Established":
            problems.append(f"BGP to {addr} {peer.state}")
    la = doc.last_apply
    if la:
        if la.error is None:
            good.append(f"generation {la.generation} applied")
        else:
            problems.append(f"last apply failed: {la.error}")
        problems += [f"waiting: {w}" for w in la.waiting]
    if doc.last_reload_error:
        problems.append(f"config refused: {doc.last_reload_error}")
    cc = doc.commit_confirm
    if cc and cc.last_rollback:
        rb = cc.last_rollback
        problems.append(f"generation {rb.generation} rolled back to {rb.restored}: {rb.reason}")
    if cc and cc.pending:
        good.append(f"generation {cc.pending.generation} on trial ({cc.pending.seconds_left:g} s left)")
    up = doc.upgrade
    if up is not None and up.agent.action == "held":
        problems.append(f"upgrade to {up.agent.target} held: {up.agent.detail}")
    if doc.guard is not None and not doc.guard.overlay_protected:
        problems.append("overlay unprotected (transport plain: VXLAN and BGP cross the WAN in the clear)")
    if problems:
        return "DEGRADED: " + "; ".join(_short(p) for p in problems)
    return "OK: " + ", ".join(good) if good else "OK"


def _bootstrap_line(boot: BootstrapStatus | None) -> str:
    if boot is None:
        return "bootstrap: off (not a zero-touch start)"
    line = f"bootstrap: {boot.state}"
    if boot.state != "done":
        line += f" (attempt {boot.attempts})"
        if boot.last_error:
            line += f": {boot.last_error}"
    d = boot.discovery
    if any(d.failures.values()):
        line += f"; discovery {sum(d.attempts.values())} attempts, {sum(d.failures.values())} failed"
        if d.last_error:
            line += " (last: " + "; ".join(f"{source}: {err}" for source, err in d.last_error.items()) + ")"
    return line


def _channel_line(ch: ChannelStatus | None) -> str:
    if ch is None:
        return "channel: off (no controller)"
    counts = f"connects {ch.connects}, failures {ch.failures}"
    if ch.connected:
        since = f" since {time.strftime('%H:%M:%S', time.localtime(ch.since))}" if ch.since else ""
        return f"channel: connected to {ch.url}{since} ({counts})"
    err = f": {ch.last_error}" if ch.last_error else ""
    return f"channel: DOWN ({ch.url}){err} ({counts})"


def _upgrade_lines(u: UpgradeState | None) -> list[str]:
    if u is None:
        return []
    if not u.appliance:
        return [f"upgrade: {u.detail or 'not an A/B appliance'}"]
    trial = "" if u.booted_slot == u.committed_slot else ", on trial"
    agent = f"{u.agent.action}" + (f": {u.agent.detail}" if u.agent.detail else "")
    lines = [f"upgrade: running {u.running_version} (slot {u.booted_slot}{trial}), committed {u.committed_version} "
             f"(slot {u.committed_slot}); target {u.agent.target or 'none'}: {agent}"]
    if u.last_attempt is not None or u.last_refusal is not None:
        lines.append(f"  last attempt {u.attempt_line() or '-'}: {_short(u.outcome())}")
    return lines


def _child_line(c: ChildSaStatus) -> str:
    line = f"    {c.dir:<3} spi {c.spi}"
    if c.packets is not None:  # the userspace engine's counters, or the kernel's for an XFRM state
        line += (f" packets {c.packets} bytes {c.bytes} replay {c.replay_drops or 0}"
                 f" auth {c.auth_failures or 0}")
    return line


def _tunnel_lines(tun: TunnelsStatus) -> list[str]:
    lines = [f"ipsec: backend {tun.backend} (kernel ESP {'yes' if tun.kernel_esp else 'no'})"]
    sad = list(tun.child_sas)
    used: set[int] = set()
    for p in tun.ike:
        sa = p.ike_sa
        state = sa.state if sa else "down"
        err = f"  last error: {p.last_error}" if p.last_error else ""
        lines.append(f"  {p.peer:<10} IKE {state:<12} {sa.peer if sa else '-':<22}{err}")
        # this IKE SA's child SAs: the SAD entries with its children's SPIs (the kernel's carry the peer)
        children = sa.children if sa else []
        spis = {("in", c.in_spi) for c in children} | {("out", c.out_spi) for c in children}
        for i, c in enumerate(sad):
            if i not in used and ((c.dir, c.spi) in spis or c.peer == p.peer):
                used.add(i)
                lines.append(_child_line(c))
    rest = [c for i, c in enumerate(sad) if i not in used]
    if rest:
        lines.append("  SAs of no IKE SA (going away):")
        lines += [_child_line(c) for c in rest]
    e = tun.engine
    if any(e.values()):
        lines.append("  engine: " + " ".join(f"{k}={v}" for k, v in e.items() if v))
    return lines


def _guard_line(g: GuardStatus | None) -> str:
    if g is None:
        return "input guard: not in place (no config applied yet)"
    dropped = ", ".join(f"{k.split('.', 1)[1]} {v.packets}" for k, v in g.dropped.items())
    overlay = "only through the tunnel" if g.overlay_protected else "UNPROTECTED (transport plain)"
    return f"input guard: overlay {overlay}; dropped {dropped} packets"


def _port_guard_line(g: PortGuardStatus | None) -> str | None:
    if g is None:
        return None
    lan = {n: p for n, p in g.ports.items() if p.kind == "lan"}
    held = ", ".join(f"{n} {p.macs}/{p.max_macs} MACs" for n, p in sorted(lan.items()))
    refused = sum(c.packets for p in lan.values() for c in p.dropped.values())
    forged = sum(c.packets for p in g.ports.values() if p.kind == "overlay" for c in p.dropped.values())
    stray = sum(c.packets for p in g.ports.values() if p.kind == "bridge" for c in p.dropped.values())
    return (f"port guard: {held or 'no LAN ports'}; new MACs refused {refused} frames; "
            f"forged from the overlay {forged} frames"
            + (f"; from ports nsg did not put on a bridge {stray} frames" if stray else ""))


def _alert_lines(a: AlertsStatus | None) -> list[str]:
    if a is None or not a.last:
        return []
    counts = ", ".join(f"{r} {n}" for r, n in sorted(a.counts.items()))
    return [f"security alerts: {counts}" + (f" ({a.unsent} not sent to the controller yet)" if a.unsent else ""),
            *(f"  {time.strftime('%H:%M:%S', time.localtime(x.ts))} {_short(x.message)}" for x in a.last[-3:])]


def render(st: GatewayStatus | Mapping[str, Any]) -> str:
    doc = _doc(st)
    cfg = doc.config
    uptime = "?" if doc.uptime_s is None else doc.uptime_s
    lines = [verdict(doc), f"nsg {doc.version}  pid {doc.pid}  up {uptime}s"]
    if cfg is not None:
        lines.append(f"system ip {cfg.system_ip}  transport {cfg.transport}  generation {cfg.generation}"
                     f" (config {cfg.config_generation})")
    else:
        lines.append("no config yet")
    lines += [_bootstrap_line(doc.bootstrap), _channel_line(doc.channel), *_upgrade_lines(doc.upgrade),
              _guard_line(doc.guard)]
    port = _port_guard_line(doc.port_guard)
    lines += ([port] if port else []) + _alert_lines(doc.alerts) + [""]
    if cfg is not None:
        lines.append("uplinks:")
        for u in doc.uplinks:
            lines.append(f"  {u.name:<10} {u.interface:<10} {u.mode:<7} {u.address or '-':<20}"
                         f" via {u.gateway or '-'}")
        lines.append("subnets:")
        for s in doc.subnets:
            lines.append(f"  {s.name:<10} vni {s.vni:<8} {s.cidr:<18} gw {s.gateway:<15}"
                         f" {s.bridge}/{s.vxlan} ports {','.join(s.ports) or '-'}")
        lines.append("peers:")
        for p in doc.peers:
            lines.append(f"  {p.name:<10} system ip {p.system_ip:<15} endpoint {p.endpoint}")
        lines.append("devices:")
        for d in doc.devices:
            state = "up" if d.up else "DOWN"
            vni = f" vni {d.vni}" if d.vni else ""
            lines.append(f"  {d.name:<10} {d.kind or '-':<7} mtu {d.mtu:<5} {state:<4}"
                         f" master {d.master or '-'}{vni}")
    tun = doc.tunnels
    if tun and tun.backend:
        lines += _tunnel_lines(tun)
    ev = doc.evpn
    if ev:
        r = ev.routes
        lines.append(f"evpn: {r.local} local type-2 routes; received {r.mac} MAC, {r.imet} VTEP (type 3), "
                     f"{r.prefix} prefix routes  (nsg show evpn lists them)")
        for addr, p in ev.peers.items():
            lines.append(f"  BGP {addr:<16} {p.state:<12} updates in {p.updates} flaps {p.flaps}")
    la = doc.last_apply
    if la:
        when = time.strftime("%H:%M:%S", time.localtime(la.at))
        verdict_ = "ok" if la.error is None else f"FAILED: {la.error}"
        changes = "no changes" if not la.changes_made else f"{la.changes_made} changes"
        lines.append(f"last apply: generation {la.generation} ({la.reason}) at {when}: {changes}, {verdict_}")
        for w in la.waiting:
            lines.append(f"  waiting: {w}")
    if doc.last_reload_error:
        lines.append(f"last reload REFUSED: {doc.last_reload_error}")
    lines.append("counters: " + " ".join(f"{k}={v}" for k, v in doc.counters.items()))
    return "\n".join(lines)

"""Human rendering of the daemon's status document (`nsg status`; `--json` gives the document).

The first line is the verdict, like `tailscale status`: "OK: ..." when every tunnel is up, the
channel is connected and the last apply worked; otherwise "DEGRADED: " and what is wrong.
"""

from __future__ import annotations

import time

MAX_REASON = 160  # characters of one problem on the verdict line


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def _tunnel_up(p: dict) -> bool:
    sa = p.get("ike_sa")
    return bool(sa and sa["state"] == "established" and sa.get("children"))


def verdict(st: dict) -> str:
    good: list[str] = []
    problems: list[str] = []
    boot = st.get("bootstrap")
    if st.get("config") is None:
        why = ""
        if boot:
            why = f" (bootstrap {boot['state']}, attempt {boot.get('attempts', 0)}"
            why += f": {boot['last_error']})" if boot.get("last_error") else ")"
        problems.append("no config yet" + why)
    elif boot and boot["state"] != "done":
        problems.append(f"bootstrap {boot['state']}" + (f": {boot['last_error']}" if boot.get("last_error") else ""))
    tun = st.get("tunnels") or {}
    ike = tun.get("ike") or []
    if ike:
        for p in ike:
            if _tunnel_up(p):
                continue
            sa = p.get("ike_sa")
            state = "down" if not sa or sa["state"] == "closed" else f"not up (IKE {sa['state']})"
            why = f" ({p['last_error']})" if p.get("last_error") else ""
            problems.append(f"tunnel to {p['peer']} {state}{why}")
        good.append(f"{sum(map(_tunnel_up, ike))}/{len(ike)} tunnels up")
    ch = st.get("channel")
    if ch:
        if ch.get("connected"):
            good.append("channel connected")
        else:
            problems.append("channel down" + (f" ({ch['last_error']})" if ch.get("last_error") else ""))
    for addr, peer in ((st.get("evpn") or {}).get("peers") or {}).items():
        if peer.get("state") != "Established":
            problems.append(f"BGP to {addr} {peer.get('state')}")
    la = st.get("last_apply")
    if la:
        if la.get("error") is None:
            good.append(f"generation {la['generation']} applied")
        else:
            problems.append(f"last apply failed: {la['error']}")
        problems += [f"waiting: {w}" for w in la.get("waiting") or ()]
    if st.get("last_reload_error"):
        problems.append(f"config refused: {st['last_reload_error']}")
    cc = st.get("commit_confirm") or {}
    if cc.get("last_rollback"):
        rb = cc["last_rollback"]
        problems.append(f"generation {rb['generation']} rolled back to {rb['restored']}: {rb['reason']}")
    if cc.get("pending"):
        good.append(f"generation {cc['pending']['generation']} on trial ({cc['pending']['seconds_left']:g} s left)")
    guard = st.get("guard")
    if guard is not None and not guard.get("overlay_protected"):
        problems.append("overlay unprotected (transport plain: VXLAN and BGP cross the WAN in the clear)")
    if problems:
        return "DEGRADED: " + "; ".join(_short(p) for p in problems)
    return "OK: " + ", ".join(good) if good else "OK"


def _bootstrap_line(boot: dict | None) -> str:
    if boot is None:
        return "bootstrap: off (not a zero-touch start)"
    line = f"bootstrap: {boot['state']}"
    if boot["state"] != "done":
        line += f" (attempt {boot.get('attempts', 0)})"
        if boot.get("last_error"):
            line += f": {boot['last_error']}"
    d = boot.get("discovery") or {}
    if d.get("failures"):
        line += f"; discovery {d['attempts']} attempts, {d['failures']} failed"
        if d.get("last_error"):
            line += f" (last: {d['last_error']})"
    return line


def _channel_line(ch: dict | None) -> str:
    if ch is None:
        return "channel: off (no controller)"
    counts = f"connects {ch.get('connects', 0)}, failures {ch.get('failures', 0)}"
    if ch.get("connected"):
        since = f" since {time.strftime('%H:%M:%S', time.localtime(ch['since']))}" if ch.get("since") else ""
        return f"channel: connected to {ch['url']}{since} ({counts})"
    err = f": {ch['last_error']}" if ch.get("last_error") else ""
    return f"channel: DOWN ({ch['url']}){err} ({counts})"


def _child_line(c: dict) -> str:
    line = f"    {c['dir']:<3} spi {c['spi']}"
    if "packets" in c:
        line += (f" packets {c['packets']} bytes {c['bytes']} replay {c.get('replay_drops', 0)}"
                 f" auth {c.get('auth_failures', 0)}")
    return line


def _tunnel_lines(tun: dict) -> list[str]:
    lines = [f"ipsec: backend {tun['backend']} (kernel ESP {'yes' if tun.get('kernel_esp') else 'no'})"]
    sad = list(tun.get("child_sas") or [])
    used: set[int] = set()
    for p in tun.get("ike") or []:
        sa = p["ike_sa"]
        state = sa["state"] if sa else "down"
        err = f"  last error: {p['last_error']}" if p.get("last_error") else ""
        lines.append(f"  {p['peer']:<10} IKE {state:<12} {sa['peer'] if sa else '-':<22}{err}")
        # this IKE SA's child SAs: the SAD entries with its children's SPIs (the kernel's carry the peer)
        spis = {("in", c["in_spi"]) for c in (sa or {}).get("children", [])}
        spis |= {("out", c["out_spi"]) for c in (sa or {}).get("children", [])}
        for i, c in enumerate(sad):
            if i not in used and ((c["dir"], c["spi"]) in spis or c.get("peer") == p["peer"]):
                used.add(i)
                lines.append(_child_line(c))
    rest = [c for i, c in enumerate(sad) if i not in used]
    if rest:
        lines.append("  SAs of no IKE SA (going away):")
        lines += [_child_line(c) for c in rest]
    e = tun.get("engine") or {}
    if any(e.values()):
        lines.append("  engine: " + " ".join(f"{k}={v}" for k, v in e.items() if v))
    return lines


def _guard_line(g: dict | None) -> str:
    if g is None:
        return "input guard: not in place (no config applied yet)"
    dropped = ", ".join(f"{k.split('.', 1)[1]} {v['packets']}" for k, v in g["dropped"].items())
    overlay = "only through the tunnel" if g["overlay_protected"] else "UNPROTECTED (transport plain)"
    return f"input guard: overlay {overlay}; dropped {dropped} packets"


def render(st: dict) -> str:
    cfg = st.get("config")
    lines = [verdict(st), f"nsg {st['version']}  pid {st['pid']}  up {st.get('uptime_s', '?')}s"]
    if cfg is not None:
        lines.append(f"system ip {cfg['system_ip']}  transport {cfg['transport']}  generation {cfg['generation']}"
                     f" (config {cfg['config_generation']})")
    else:
        lines.append("no config yet")
    lines += [_bootstrap_line(st.get("bootstrap")), _channel_line(st.get("channel")), _guard_line(st.get("guard")), ""]
    if cfg is not None:
        lines.append("uplinks:")
        for u in st["uplinks"]:
            lines.append(f"  {u['name']:<10} {u['interface']:<10} {u['mode']:<7} {u['address'] or '-':<20}"
                         f" via {u['gateway'] or '-'}")
        lines.append("subnets:")
        for s in st["subnets"]:
            lines.append(f"  {s['name']:<10} vni {s['vni']:<8} {s['cidr']:<18} gw {s['gateway']:<15}"
                         f" {s['bridge']}/{s['vxlan']} ports {','.join(s['ports']) or '-'}")
        lines.append("peers:")
        for p in st["peers"]:
            lines.append(f"  {p['name']:<10} system ip {p['system_ip']:<15} endpoint {p['endpoint']}")
        lines.append("devices:")
        for d in st["devices"]:
            state = "up" if d["up"] else "DOWN"
            vni = f" vni {d['vni']}" if d["vni"] else ""
            lines.append(f"  {d['name']:<10} {d['kind'] or '-':<7} mtu {d['mtu']:<5} {state:<4}"
                         f" master {d['master'] or '-'}{vni}")
    tun = st.get("tunnels")
    if tun and tun.get("backend"):
        lines += _tunnel_lines(tun)
    ev = st.get("evpn")
    if ev:
        r = ev["routes"]
        lines.append(f"evpn: {r['local']} local type-2 routes; received {r['mac']} MAC, {r['imet']} VTEP (type 3), "
                     f"{r.get('prefix', 0)} prefix routes  (nsg show evpn lists them)")
        for addr, p in ev["peers"].items():
            lines.append(f"  BGP {addr:<16} {p['state']:<12} updates in {p['updates']} flaps {p['flaps']}")
    la = st.get("last_apply")
    if la:
        when = time.strftime("%H:%M:%S", time.localtime(la["at"]))
        verdict_ = "ok" if la["error"] is None else f"FAILED: {la['error']}"
        changes = "no changes" if not la["changes_made"] else f"{la['changes_made']} changes"
        lines.append(f"last apply: generation {la['generation']} ({la['reason']}) at {when}: {changes}, {verdict_}")
        for w in la["waiting"]:
            lines.append(f"  waiting: {w}")
    if st.get("last_reload_error"):
        lines.append(f"last reload REFUSED: {st['last_reload_error']}")
    c = st.get("counters") or {}
    lines.append("counters: " + " ".join(f"{k}={v}" for k, v in c.items()))
    return "\n".join(lines)

"""Human rendering of the daemon's status document."""

from __future__ import annotations

import time


def render(st: dict) -> str:
    cfg = st["config"]
    lines = [
        f"nsg {st['version']}  pid {st['pid']}  up {st['uptime_s']}s",
        f"system ip {cfg['system_ip']}  transport {cfg['transport']}  generation {cfg['generation']}"
        f" (config {cfg['config_generation']})",
        "",
        "uplinks:",
    ]
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
    if tun:
        lines.append(f"ipsec: backend {tun['backend']} (kernel ESP {'yes' if tun['kernel_esp'] else 'no'})")
        for p in tun["ike"]:
            sa = p["ike_sa"]
            state = sa["state"] if sa else "down"
            err = f"  last error: {p['last_error']}" if p["last_error"] else ""
            lines.append(f"  {p['peer']:<10} IKE {state:<12} {sa['peer'] if sa else '-':<22}{err}")
        for c in tun["child_sas"]:
            lines.append(f"    {c['dir']:<3} spi {c['spi']} packets {c['packets']} bytes {c['bytes']}"
                         f" replay {c['replay_drops']} auth {c['auth_failures']}")
        e = tun["engine"]
        lines.append("  engine: " + " ".join(f"{k}={v}" for k, v in e.items() if v))
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
        verdict = "ok" if la["error"] is None else f"FAILED: {la['error']}"
        changes = "no changes" if not la["changes_made"] else f"{la['changes_made']} changes"
        lines.append(f"last apply: generation {la['generation']} ({la['reason']}) at {when}: {changes}, {verdict}")
        for w in la["waiting"]:
            lines.append(f"  waiting: {w}")
    if st.get("last_reload_error"):
        lines.append(f"last reload REFUSED: {st['last_reload_error']}")
    c = st["counters"]
    lines.append("counters: " + " ".join(f"{k}={v}" for k, v in c.items()))
    return "\n".join(lines)

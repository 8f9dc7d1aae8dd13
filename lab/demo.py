"""The demo: a controller and two branches (b2 behind a NAT) whose gateways start empty — only a
factory identity — and set themselves up: DHCP option 143, SZTP, EST, the mTLS channel, IKEv2/ESP,
then BGP EVPN to the route reflector beside the hub on the controller node (inside ESP).

`make demo` runs `nsg-lab demo` (returns once everything is up; daemons keep running);
`make demo-down` runs `nsg-lab down --name demo`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lab import topology
from lab.gateways import HUB
from lab.lab import Lab
from lab.netns import LabError
from lab.zerotouch import ZeroTouchLab, serial_of

DEMO_NAME = "demo"
TOPOLOGY = "two-branch-nat"


def down_hint(name: str) -> str:
    """How to tear a demo lab down, in the README's words where there are some."""
    return "make demo-down" if name == DEMO_NAME else f"nsg-lab down --name {name}"


def up(name: str = DEMO_NAME) -> str:
    lab = Lab(name)
    if lab.namespaces():
        raise LabError(f"the demo lab {name!r} is up already (see `nsg-lab status --name {name}`); "
                       f"tear it down first: {down_hint(name)}")
    plan = lab.up(topology.load(TOPOLOGY))
    try:
        zt = ZeroTouchLab(lab, plan)
        zt.prepare()
        t0 = zt.power_on_all()
        zt.wait_up()
        took = time.monotonic() - t0
        hosts = plan.to_json()["hosts"]
        b2h1 = hosts["b2-h1"].split("/")[0]
        ping = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", b2h1, check=False)
        rows = []
        for g in plan.gateways:
            st = zt.gws.status(g.name)
            ike = st["tunnels"]["ike"][0]["ike_sa"]
            evpn = st["evpn"] or {"peers": {}, "routes": {}}
            bgp = ",".join(p["state"] for p in evpn["peers"].values()) or "-"
            rows.append(f"  {g.name:<4} serial {serial_of(g.name):<8} system ip "
                        f"{st['config']['system_ip']:<14} config gen {st['config']['generation']:<3} "
                        f"channel {'up' if st['channel']['connected'] else 'DOWN':<4} IKE {ike['state']}, "
                        f"BGP EVPN {bgp} ({evpn['routes'].get('imet', 0)} remote VTEPs)"
                        f"{' (behind NAT)' if g.nat else ''}")
        hub = zt.gws.status(HUB)
        rows.append(f"  {HUB:<4} serial {serial_of(HUB):<8} system ip {hub['config']['system_ip']:<14} "
                    f"on ctl, beside the route reflector; IKE to "
                    + ", ".join(f"{p['peer']} {p['ike_sa']['state'] if p['ike_sa'] else 'down'}"
                                for p in hub["tunnels"]["ike"]))
    except Exception:
        lab.down()
        raise
    verdict = "ok" if ping.returncode == 0 else "FAILED"
    bindir = Path(sys.executable).parent
    table = "\n".join(rows)
    return f"""\
demo lab '{name}' is up: {len(plan.nodes)} namespaces. Both gateways started empty and set themselves up
in {took:.1f}s (DHCP option 143 -> SZTP -> EST -> mTLS channel -> config -> IKEv2/ESP -> BGP EVPN
to the route reflector at the hub, inside ESP):
{table}
  b1-h1 -> b2-h1 ping over VXLAN inside ESP: {verdict}

Look around:
  {bindir}/nsg-lab status --name {name}
  {bindir}/nsg-lab exec --name {name} b1-h1 -- ping -c3 {b2h1}
  {bindir}/nsg-lab exec --name {name} b1 -- {bindir}/nsg status --state-dir {zt.state_dir('b1')}
  {bindir}/nsg-lab exec --name {name} b1 -- {bindir}/nsg show evpn --state-dir {zt.state_dir('b1')}
  {bindir}/nsg-lab exec --name {name} ctl -- {bindir}/nsg-controller gateway list acme \\
      --token-file {zt.token_file} --url http://127.0.0.1:8443
  {bindir}/nsg-lab exec --name {name} inet -- tcpdump -ni b1-w0  # IKE+ESP-in-UDP (500/4500), TLS to 8444
  logs: {lab.dir / 'logs'}
Tear down: {down_hint(name)}
"""

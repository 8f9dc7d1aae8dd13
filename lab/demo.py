"""The demo: two branches (b2 behind a NAT), their gateways running nsg, the overlay
encrypted with IKEv2/ESP, hosts pinging across.

`make demo` runs `nsg-lab demo` (returns once everything is up, daemons keep
running); `make demo-down` runs `nsg-lab down --name demo`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lab import topology
from lab.gateways import Gateways
from lab.lab import Lab

DEMO_NAME = "demo"
TOPOLOGY = "two-branch-nat"


def up(name: str = DEMO_NAME) -> str:
    lab = Lab(name)
    plan = lab.up(topology.load(TOPOLOGY))
    try:
        gws = Gateways(lab, plan, transport="esp")
        gws.write_configs()
        for g in plan.gateways:
            gws.start(g.name)
        for g in plan.gateways:
            gws.wait_applied(g.name)
        for g in plan.gateways:
            gws.wait_tunnels(g.name)
        hosts = plan.to_json()["hosts"]
        ping = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", hosts["b2-h1"].split("/")[0], check=False)
    except Exception:
        lab.down()
        raise
    b2h1 = hosts["b2-h1"].split("/")[0]
    bindir = Path(sys.executable).parent
    verdict = "ok" if ping.returncode == 0 else "FAILED"
    return f"""\
demo lab '{name}' is up: {len(plan.nodes)} namespaces, gateways b1 and b2 (behind NAT) running nsg.
  b1-h1 -> b2-h1 ping over VXLAN inside IKEv2/ESP: {verdict}

Look around:
  {bindir}/nsg-lab status --name {name}
  {bindir}/nsg-lab exec --name {name} b1-h1 -- ping -c3 {b2h1}
  {bindir}/nsg-lab exec --name {name} b1 -- {bindir}/nsg status --state-dir {gws.state_dir('b1')}
  {bindir}/nsg-lab exec --name {name} inet -- tcpdump -ni b1-w0      # only UDP 500/4500 on the WAN
  logs: {lab.dir / 'logs'}
Tear down: make demo-down
"""

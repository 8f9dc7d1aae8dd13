"""The demo: two branches, their gateways running nsg, hosts pinging across the overlay.

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
TOPOLOGY = "two-branch"


def up(name: str = DEMO_NAME) -> str:
    lab = Lab(name)
    plan = lab.up(topology.load(TOPOLOGY))
    try:
        gws = Gateways(lab, plan)
        gws.write_configs()
        for g in plan.gateways:
            gws.start(g.name)
        for g in plan.gateways:
            gws.wait_applied(g.name)
        hosts = plan.to_json()["hosts"]
        ping = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", hosts["b2-h1"].split("/")[0], check=False)
    except Exception:
        lab.down()
        raise
    b2h1 = hosts["b2-h1"].split("/")[0]
    bindir = Path(sys.executable).parent
    verdict = "ok" if ping.returncode == 0 else "FAILED"
    return f"""\
demo lab '{name}' is up: {len(plan.nodes)} namespaces, gateways b1 and b2 running nsg.
  b1-h1 -> b2-h1 ping over VXLAN: {verdict}

Look around:
  {bindir}/nsg-lab status --name {name}
  {bindir}/nsg-lab exec --name {name} b1-h1 -- ping -c3 {b2h1}
  {bindir}/nsg-lab exec --name {name} b1 -- {bindir}/nsg status --state-dir {gws.state_dir('b1')}
  {bindir}/nsg-lab exec --name {name} inet -- tcpdump -ni b1-w0 udp port 4789
  logs: {lab.dir / 'logs'}
Tear down: make demo-down
"""

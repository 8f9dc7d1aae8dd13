"""Run nsg gateways inside a lab: enterprise from the lab plan -> configs -> daemons."""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from controller.enterprise import Enterprise, GatewayDef, SubnetDef, UplinkDef
from controller.mesh import render
from lab.lab import Lab
from lab.netns import LabError
from lab.topology import Plan
from nsg.model.config import dump_config
from nsg.model.ipsec import IpsecConfig


def enterprise_for(plan: Plan, name: str = "lab", transport: str = "plain", psk: str | None = None,
                   ipsec_options: dict | None = None) -> Enterprise:
    t = plan.tenant
    ipsec = None
    if transport == "esp":
        ipsec = IpsecConfig(psk=psk or secrets.token_urlsafe(24), **(ipsec_options or {}))
    return Enterprise(
        name=name,
        transport=transport,
        ipsec=ipsec,
        subnets=(SubnetDef(name=t.name, vni=t.vni, cidr=str(t.cidr), gateway=str(t.gateway)),),
        gateways=tuple(
            GatewayDef(
                name=g.name,
                system_ip=g.system_ip,
                uplinks=tuple(
                    UplinkDef(name=u.interface, interface=u.interface, mode="static", address=u.address,
                              gateway=u.gateway, public=u.public)
                    for u in g.uplinks
                ),
                ports={t.name: (g.lan_port,)},
                behind_nat=g.nat,
            )
            for g in plan.gateways
        ),
    )


def nsg_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "nsg.cli", *args]


class Gateways:
    """Configs under <lab>/nodes/<gw>/config.json, state dirs beside them, daemons spawned in the lab."""

    def __init__(self, lab: Lab, plan: Plan, transport: str = "plain", ipsec_options: dict | None = None):
        self.lab = lab
        self.plan = plan
        self.transport = transport
        self.ipsec_options = ipsec_options

    def config_path(self, gw: str) -> Path:
        return self.lab.node_dir(gw) / "config.json"

    def state_dir(self, gw: str) -> Path:
        return self.lab.node_dir(gw) / "state"

    def write_configs(self) -> dict[str, Path]:
        out = {}
        for name, cfg in render(enterprise_for(self.plan, transport=self.transport,
                                                      ipsec_options=self.ipsec_options)).items():
            path = self.config_path(name)
            path.touch(mode=0o600)  # it may hold the PSK
            path.write_text(dump_config(cfg))
            out[name] = path
        return out

    def start(self, gw: str, *extra: str):
        return self.lab.spawn(gw, "nsg", nsg_argv("run", "--config", str(self.config_path(gw)),
                                                 "--state-dir", str(self.state_dir(gw)), *extra))

    def status(self, gw: str) -> dict:
        proc = self.lab.run(gw, *nsg_argv("status", "--json", "--state-dir", str(self.state_dir(gw))),
                            check=False)
        if proc.returncode != 0:
            raise LabError(f"{gw}: nsg status: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def wait_tunnels(self, gw: str, timeout: float = 20.0) -> dict:
        """Until every IKE peering of the gateway is established."""
        deadline = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < deadline:
            try:
                st = self.status(gw)
            except LabError:  # not listening yet
                time.sleep(0.1)
                continue
            ike = (st.get("tunnels") or {}).get("ike") or []
            if ike and all(p["ike_sa"] and p["ike_sa"]["state"] == "established" and p["ike_sa"]["children"]
                           for p in ike):
                return st
            time.sleep(0.1)
        raise LabError(f"{gw}: tunnels not up within {timeout}s: {json.dumps((st.get('tunnels') or {}).get('ike'))}")

    def wait_applied(self, gw: str, timeout: float = 20.0, generation: int | None = None) -> dict:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                st = self.status(gw)
            except LabError as exc:
                last = str(exc)
            else:
                la = st.get("last_apply")
                if la and la["error"] is None and (generation is None or la["generation"] >= generation):
                    return st
                last = json.dumps(la)
            time.sleep(0.1)
        log = self.lab.log_path(gw, "nsg")
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise LabError(f"{gw}: nsg did not apply its config within {timeout}s ({last})\n{tail}")

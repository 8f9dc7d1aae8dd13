"""Run nsg gateways inside a lab: enterprise from the lab plan -> configs -> daemons.

With a controller node in the plan (every built-in topology has one), the enterprise has a hub: an
nsg gateway on the controller node (system IP 198.19.255.254, no subnets) with the route reflector
beside it. Every branch runs BGP EVPN to the reflector inside its tunnel to the hub, and the flood
lists and MAC entries come from EVPN; nothing is static. The hub and the reflector start with the
first branch.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from controller.enterprise import Enterprise, EnterpriseIpsec, GatewayDef, SubnetDef, UplinkDef
from controller.mesh import render
from controller.rr_policy import dump_view, view_from_configs
from lab.lab import Lab
from lab.netns import LabError
from lab.topology import CONTROLLER_SYSTEM_IP, Plan
from nsg.model.config import dump_config, load_config

HUB = "hub"  # the hub gateway's name; it runs on the controller node
HUB_NODE = "ctl"
HUB_UPLINK = "eth0"
HUB_GATEWAY = "198.18.0.1"  # inet's side of the controller link (lab/topology.py)


def hub_def(plan: Plan) -> GatewayDef:
    assert plan.controller is not None
    return GatewayDef(name=HUB, system_ip=CONTROLLER_SYSTEM_IP, role="hub", uplinks=(
        UplinkDef(name="wan0", interface=HUB_UPLINK, mode="static", address=f"{plan.controller}/24",
                  gateway=HUB_GATEWAY),))


def rr_argv(router_id: str, clients: list[str], asn: int = 65000, owners: Path | None = None) -> list[str]:
    """The route reflector beside the hub: it listens in the controller node on the hub's system IP
    (never on the WAN address); only the branches' system IPs may connect (their sessions arrive
    through the hub's tunnels). With ``owners`` (a view file, controller/rr_policy.py) it passes on
    only what each branch owns."""
    return [sys.executable, "-m", "controller.cli", "route-reflector", "--listen", f"{router_id}:179",
            "--asn", str(asn), "--router-id", router_id, *[a for c in clients for a in ("--client", c)],
            *(["--owners", str(owners)] if owners is not None else [])]


def enterprise_for(plan: Plan, name: str = "lab", transport: str = "plain", psk: str | None = None,
                   ipsec_options: dict | None = None) -> Enterprise:
    t = plan.tenant
    ipsec = None
    if transport == "esp":
        # a lab of hand-written configs has no EST: PSKs, one per pair of gateways, derived from ``psk``
        ipsec = EnterpriseIpsec(auth="psk", psk=psk or secrets.token_urlsafe(24), **(ipsec_options or {}))
    hub = (hub_def(plan),) if plan.controller else ()
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
        ) + hub,
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
        self.hub_started = False

    @staticmethod
    def node(gw: str) -> str:
        return HUB_NODE if gw == HUB else gw

    def config_path(self, gw: str) -> Path:
        return self.lab.node_dir(self.node(gw)) / ("hub-config.json" if gw == HUB else "config.json")

    def state_dir(self, gw: str) -> Path:
        return self.lab.node_dir(self.node(gw)) / ("hub-state" if gw == HUB else "state")

    def start_hub(self) -> None:
        """The hub gateway and the route reflector on the controller node (once)."""
        if self.hub_started or self.plan.controller is None:
            return
        self.hub_started = True
        self.lab.spawn(HUB_NODE, "rr", self.reflector_argv())
        self.lab.spawn(HUB_NODE, "nsg", nsg_argv("run", "--config", str(self.config_path(HUB)),
                                                  "--state-dir", str(self.state_dir(HUB))))

    def owners_path(self) -> Path:
        return self.lab.node_dir(HUB_NODE) / "rr-owners.json"

    def write_owners(self) -> Path:
        """The reflector's view of what each branch owns, from the configs as written (a test may have
        changed one, e.g. given it type-5 prefixes, before starting it); rendered when none is written."""
        names = [g.name for g in self.plan.gateways]
        if all(self.config_path(n).exists() for n in names):
            configs = {n: load_config(self.config_path(n)) for n in names}
        else:
            configs = render(enterprise_for(self.plan, transport=self.transport, ipsec_options=self.ipsec_options))
        path = self.owners_path()
        path.write_text(dump_view(view_from_configs(configs)))
        return path

    def reflector_argv(self) -> list[str]:
        """The reflector's command line, with a view written afresh (also for restarting it)."""
        return rr_argv(CONTROLLER_SYSTEM_IP, [g.system_ip for g in self.plan.gateways], owners=self.write_owners())

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
        self.start_hub()
        return self.lab.spawn(gw, "nsg", nsg_argv("run", "--config", str(self.config_path(gw)),
                                                 "--state-dir", str(self.state_dir(gw)), *extra))

    def status(self, gw: str) -> dict:
        proc = self.lab.run(self.node(gw), *nsg_argv("status", "--json", "--state-dir", str(self.state_dir(gw))),
                            check=False)
        if proc.returncode != 0:
            raise LabError(f"{gw}: nsg status: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def wait_tunnels(self, gw: str, timeout: float = 20.0, status=None) -> dict:
        """Until every IKE peering of the gateway is established. ``status``: how to ask it (a qemu box
        is asked through its guest agent); the daemon's control socket in its namespace by default."""
        deadline = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < deadline:
            try:
                st = (status or self.status)(gw)
            except LabError:  # not listening yet
                time.sleep(0.1)
                continue
            ike = (st.get("tunnels") or {}).get("ike") or []
            if ike and all(p["ike_sa"] and p["ike_sa"]["state"] == "established" and p["ike_sa"]["children"]
                           for p in ike) and self.evpn_converged(gw, st):
                return st
            time.sleep(0.1)
        raise LabError(f"{gw}: tunnels not up within {timeout}s: {json.dumps((st.get('tunnels') or {}).get('ike'))}")

    def evpn_converged(self, gw: str, st: dict) -> bool:
        """With EVPN: every BGP session up and a flood entry toward every other branch (their
        type-3 routes arrived). Without EVPN (or for the hub): True."""
        evpn = st.get("evpn")
        if gw == HUB or evpn is None:
            return True
        if not evpn["peers"] or any(p["state"] != "Established" for p in evpn["peers"].values()):
            return False
        floods = {f.split(" dst ")[1] for f in st.get("fdb", []) if " 00:00:00:00:00:00 dst " in f}
        return {g.system_ip for g in self.plan.gateways if g.name != gw} <= floods

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
                if la and la["error"] is None and (generation is None or la["generation"] >= generation) \
                        and self.evpn_converged(gw, st):
                    return st
                last = json.dumps(la)
            time.sleep(0.1)
        log = self.lab.log_path(gw, "nsg")
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise LabError(f"{gw}: nsg did not apply its config within {timeout}s ({last})\n{tail}")

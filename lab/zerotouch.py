"""The zero-touch story in a lab: the controller on `ctl`, DHCP with option 143 on every branch's
WAN (from `inet`, or from the branch's NAT router), and gateways that start with nothing but a
factory identity. Used by the demo, the e2e test and bench/bootstrap.py.

The controller's site also runs the overlay hub: a gateway of role "hub" (registered like the
branches, zero-touch like them, on `ctl`) and the route reflector beside it, which every branch
reaches at the hub's system IP through its tunnel to the hub (BGP EVPN inside ESP)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from bootstrap.identity import factory_init, make_manufacturer_ca
from bootstrap.sources.dhcp import encode_option_143
from lab.gateways import HUB, HUB_GATEWAY, HUB_UPLINK, Gateways, nsg_argv, rr_argv
from lab.lab import Lab
from lab.netns import LabError
from lab.topology import Plan

DEVICE_PORT = 8444
ADMIN = "127.0.0.1:8443"


def serial_of(gw: str) -> str:
    return f"LAB-{gw.upper()}"


class ZeroTouchLab:
    def __init__(self, lab: Lab, plan: Plan):
        if plan.controller is None:
            raise LabError("the topology has no controller node")
        self.lab = lab
        self.plan = plan
        self.ctl_dir = lab.node_dir("ctl")
        self.mfg = self.ctl_dir / "manufacturer"  # the lab manufacturer: IDevIDs and vouchers
        self.db = self.ctl_dir / "ctl.db"
        self.gws = Gateways(lab, plan, transport="esp")
        self.token = ""
        # a box whose ports have other names than the namespace gateway's (wan0, lan0): an image box in
        # qemu (lab/qemu_box.py) has eno1, eno2; registered with those
        self.port_names: dict[str, tuple[str, str]] = {}

    @property
    def bootstrap_uri(self) -> str:
        return f"https://{self.plan.controller}:{DEVICE_PORT}"

    def controller(self, *args: str, check: bool = True):
        return self.lab.run("ctl", sys.executable, "-m", "controller.cli", *args, "--token-file",
                            str(self.token_file), "--url", f"http://{ADMIN}", check=check)

    @property
    def token_file(self) -> Path:
        """The lab operator's admin token (0600): never on a command line, where `ps` shows it."""
        return self.ctl_dir / "admin.token"

    def start_controller(self, timeout: float = 15, *extra: str) -> None:
        """``extra``: more `nsg-controller serve` options (e.g. a short --ldevid-lifetime)."""
        make_manufacturer_ca(self.mfg)
        if not self.token:  # a restart keeps the database and its token
            out = self.lab.run("ctl", sys.executable, "-m", "controller.cli", "token", "create", "admin", "--db",
                               str(self.db)).stdout
            self.token = out.strip().split()[-1]
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token + "\n")
        self.lab.spawn("ctl", "controller", [
            sys.executable, "-m", "controller.cli", "serve", "--db", str(self.db), "--listen", ADMIN,
            "--devices", f"{self.plan.controller}:{DEVICE_PORT}", "--state-dir", str(self.ctl_dir / "state"),
            "--manufacturer-dir", str(self.mfg), *extra])
        deadline = time.monotonic() + timeout
        probe = "import socket,sys; socket.create_connection(('127.0.0.1', 8443)); socket.create_connection(" \
                f"('{self.plan.controller}', {DEVICE_PORT}))"
        while self.lab.run("ctl", sys.executable, "-c", probe, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"controller did not come up: {self.lab.log_path('ctl', 'controller').read_text()}")
            time.sleep(0.2)

    def register(self) -> None:
        t = self.plan.tenant
        self.controller("enterprise", "create", "acme", "--transport", "esp")
        self.controller("subnet", "add", "acme", t.name, "--vni", str(t.vni), "--cidr", str(t.cidr), "--gateway",
                        str(t.gateway))
        for g in self.plan.gateways:
            u = g.uplinks[0]
            wan_if, lan_if = self.port_names.get(g.name, ("wan0", g.lan_port))
            # the branch router is its name server too (as its DHCP lease says while the box bootstraps)
            uplink = (f"name=wan0,interface={wan_if},mode=static,address={u.address},gateway={u.gateway},"
                      f"dns={u.gateway}")
            if g.nat:
                uplink += f",public={u.public}"
            self.controller("gateway", "add", "acme", g.name, "--serial", serial_of(g.name), "--port",
                            f"{t.name}={lan_if}", "--uplink", uplink, *(["--behind-nat"] if g.nat else []))
        self.controller("gateway", "add", "acme", HUB, "--serial", serial_of(HUB), "--role", "hub", "--uplink",
                        f"name=wan0,interface={HUB_UPLINK},mode=static,address={self.plan.controller}/24,"
                        f"gateway={HUB_GATEWAY}")

    def start_route_reflector(self) -> None:
        """Beside the hub, for the system IPs the controller gave the branches."""
        def sysip(name: str) -> str:
            return json.loads(self.controller("gateway", "show", name, "--json").stdout)["system_ip"]

        # what each branch owns, from the configs the controller renders (as an operator does it); the
        # reflector's refusals go back to the controller as security events
        owners = self.ctl_dir / "reflector-view.json"
        self.controller("security", "reflector-view", "acme", "--out", str(owners))
        argv = rr_argv(sysip(HUB), [sysip(g.name) for g in self.plan.gateways], owners=owners)
        self.lab.spawn("ctl", "rr", [*argv, "--events-to", f"http://{ADMIN}", "--token-file", str(self.token_file)])

    def start_dhcp(self) -> None:
        """Each branch's WAN gets its planned address by DHCP, and option 143 names the bootstrap server."""
        opt143 = ":".join(f"{b:02x}" for b in encode_option_143([self.bootstrap_uri]))
        dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        assert self.plan.controller is not None
        per_node: dict[str, list[str]] = {"inet": [  # the hub's WAN: the controller's own address
            f"--dhcp-range=set:{HUB},{self.plan.controller},{self.plan.controller},255.255.255.0,1h",
            f"--dhcp-option=tag:{HUB},3,{HUB_GATEWAY}"]}
        for g in self.plan.gateways:
            u = g.uplinks[0]
            host = u.address.split("/")[0]
            node = f"{g.name}-nat" if g.nat else "inet"
            # the branch router is its name server too (option 6: an appliance writes its resolv.conf)
            per_node.setdefault(node, []).extend([f"--dhcp-range=set:{g.name},{host},{host},255.255.255.0,1h",
                                                  f"--dhcp-option=tag:{g.name},3,{u.gateway}",
                                                  f"--dhcp-option=tag:{g.name},6,{u.gateway}"])
        for node, ranges in per_node.items():
            d = self.lab.node_dir(node)
            self.lab.spawn(node, "dhcp", [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                                          "--no-resolv", "--no-hosts", "--user=root", "--dhcp-authoritative",
                                          "--no-ping", f"--dhcp-leasefile={d / 'leases'}",
                                          f"--pid-file={d / 'dnsmasq.pid'}", "--log-dhcp", "--log-facility=-",
                                          *ranges, f"--dhcp-option-force=143,{opt143}"])

    def state_dir(self, gw: str) -> Path:
        return self.gws.state_dir(gw)

    def power_on(self, gw: str, *extra: str):
        """A box fresh from the factory: an IDevID, an empty configuration, plugged in."""
        ident = self.state_dir(gw) / "identity"
        if not (ident / "idevid.pem").exists():
            factory_init(ident, serial_of(gw), make_manufacturer_ca(self.mfg))
        wan = HUB_UPLINK if gw == HUB else "wan0"
        return self.lab.spawn(self.gws.node(gw), "nsg", nsg_argv("run", "--bootstrap", wan, "--state-dir",
                                                                str(self.state_dir(gw)), *extra))

    def wait_up(self, timeout: float = 60) -> None:
        for g in self.plan.gateways:
            self.gws.wait_tunnels(g.name, timeout=timeout)

    def prepare(self, *controller_args: str) -> None:
        """Everything but the branch boxes: the controller with the gateways registered, the route
        reflector, DHCP on the WANs, and the hub (it zero-touches like a branch)."""
        self.start_controller(15, *controller_args)
        self.register()
        self.start_route_reflector()
        self.start_dhcp()
        self.power_on(HUB)

    def power_on_all(self, *extra: str) -> float:
        """Power on every gateway; returns the monotonic time it happened."""
        t0 = time.monotonic()
        for g in self.plan.gateways:
            self.power_on(g.name, *extra)
        return t0

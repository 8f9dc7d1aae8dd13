"""Declarative lab topologies and the addressing plan derived from them. Pure.

Addresses come only from 198.18.0.0/15 (RFC 2544 benchmarking space):

  198.18.0.0/24          controller segment (inet .1, ctl .2)
  198.18.(16k+i).0/24    WAN k of branch i (inet .1, gateway or NAT outside .2)
  198.18.(128+16k+i).0/24  behind the NAT router of branch i, WAN k (NAT .1, gateway .2)
  198.19.0.0/24          the tenant subnet (VNI 100), gateway .1 at every branch
  198.19.255.i/32        system IP of branch i; .254 the controller's
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nsg.dataplane.mtu import tenant_mtu

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")  # no '-': "<lab>-" must prefix only this lab
NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
MAX_BRANCHES = 15


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(_M):
    name: str
    address: IPv4Interface


class Branch(_M):
    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,9}$")
    wan_ports: int = Field(default=1, ge=1, le=2)
    nat: bool = False
    hosts: tuple[Host, ...] = ()


class Tenant(_M):
    name: str = "corp"
    vni: int = 100
    cidr: IPv4Network = IPv4Network("198.19.0.0/24")
    gateway: IPv4Address = IPv4Address("198.19.0.1")


class Topology(_M):
    name: str
    branches: tuple[Branch, ...] = Field(min_length=1, max_length=MAX_BRANCHES)
    controller: bool = True
    tenant: Tenant = Tenant()
    # Pre-encryption ("plain" transport) only: the core routes each branch's
    # system IP toward that branch, as a private MPLS underlay would.
    underlay_routes_system_ips: bool = False

    @model_validator(mode="after")
    def _check(self) -> Topology:
        allowed = IPv4Network("198.18.0.0/15")
        names = ["inet", "ctl"]
        for b in self.branches:
            names += [b.name, f"{b.name}-lan", f"{b.name}-nat"]
            for h in b.hosts:
                if not NODE_NAME_RE.match(h.name):
                    raise ValueError(f"host name {h.name!r} must match {NODE_NAME_RE.pattern}")
                if h.address.network != self.tenant.cidr:
                    raise ValueError(f"host {h.name} address {h.address} is not in the tenant {self.tenant.cidr}")
                names.append(h.name)
        if len(set(names)) != len(names):
            raise ValueError("node names collide")
        if not self.tenant.cidr.subnet_of(allowed):
            raise ValueError("tenant cidr must lie in 198.18.0.0/15")
        return self


# --- the plan --------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    kind: Literal["router", "controller", "gateway", "nat", "switch", "host"]
    forwarding: bool = False


@dataclass(frozen=True)
class Link:
    a: str
    a_if: str
    b: str
    b_if: str


@dataclass(frozen=True)
class Uplink:
    interface: str
    address: str  # "198.18.1.2/24"
    gateway: str
    public: str  # where the rest of the lab reaches it (the NAT outside address behind a NAT)


@dataclass(frozen=True)
class GatewayPlan:
    name: str
    system_ip: str
    uplinks: tuple[Uplink, ...]
    lan_port: str
    nat: bool


@dataclass(frozen=True)
class Plan:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    addresses: tuple[tuple[str, str, str], ...]  # (node, ifname, cidr) the lab assigns
    routes: tuple[tuple[str, str, str], ...]  # (node, dst, via)
    bridges: tuple[tuple[str, str, tuple[str, ...]], ...]  # (node, bridge, ports)
    masquerade: tuple[tuple[str, str], ...]  # (node, outside ifname)
    gateways: tuple[GatewayPlan, ...]
    mtus: tuple[tuple[str, str, int], ...] = ()  # (node, ifname, mtu)
    controller: str | None = None  # controller address
    tenant: Tenant = field(default_factory=Tenant)

    def to_json(self) -> dict:
        return {
            "gateways": {g.name: {"system_ip": g.system_ip, "nat": g.nat, "lan_port": g.lan_port,
                                  "uplinks": [u.__dict__ for u in g.uplinks]} for g in self.gateways},
            "controller": self.controller,
            "tenant": json.loads(self.tenant.model_dump_json()),
            "hosts": {n: c for (n, i, c) in self.addresses if i == "eth0"},
        }


def system_ip(index: int) -> str:
    return f"198.19.255.{index}"


CONTROLLER_SYSTEM_IP = "198.19.255.254"


def plan(topo: Topology) -> Plan:
    nodes = [Node("inet", "router", True)]
    links: list[Link] = []
    addrs: list[tuple[str, str, str]] = []
    routes: list[tuple[str, str, str]] = []
    bridges: list[tuple[str, str, tuple[str, ...]]] = []
    masq: list[tuple[str, str]] = []
    mtus: list[tuple[str, str, int]] = []
    gws: list[GatewayPlan] = []
    controller = None
    if topo.controller:
        nodes.append(Node("ctl", "controller"))
        links.append(Link("inet", "ctl0", "ctl", "eth0"))
        addrs += [("inet", "ctl0", "198.18.0.1/24"), ("ctl", "eth0", "198.18.0.2/24")]
        routes.append(("ctl", "default", "198.18.0.1"))
        controller = "198.18.0.2"
        if topo.underlay_routes_system_ips:  # the hub beside the controller (lab/gateways.py)
            routes.append(("inet", f"{CONTROLLER_SYSTEM_IP}/32", controller))
    for i, b in enumerate(topo.branches, start=1):
        nodes.append(Node(b.name, "gateway", True))
        if b.nat:
            nat = f"{b.name}-nat"
            nodes.append(Node(nat, "nat", True))
            routes.append((nat, "default", f"198.18.{i}.1"))
        uplinks = []
        for k in range(b.wan_ports):
            outer = f"198.18.{16 * k + i}"
            links.append(Link("inet", f"{b.name}-w{k}", f"{b.name}-nat" if b.nat else b.name,
                              f"out{k}" if b.nat else f"wan{k}"))
            addrs.append(("inet", f"{b.name}-w{k}", f"{outer}.1/24"))
            if b.nat:
                inner = f"198.18.{128 + 16 * k + i}"
                links.append(Link(f"{b.name}-nat", f"in{k}", b.name, f"wan{k}"))
                addrs += [(f"{b.name}-nat", f"out{k}", f"{outer}.2/24"), (f"{b.name}-nat", f"in{k}", f"{inner}.1/24")]
                masq.append((f"{b.name}-nat", f"out{k}"))
                if k > 0:
                    # a second WAN behind the same NAT box: policy is out of scope, keep it reachable
                    routes.append((f"{b.name}-nat", f"{outer}.0/24", f"{outer}.1"))
                uplinks.append(Uplink(f"wan{k}", f"{inner}.2/24", f"{inner}.1", f"{outer}.2"))
            else:
                uplinks.append(Uplink(f"wan{k}", f"{outer}.2/24", f"{outer}.1", f"{outer}.2"))
        if topo.underlay_routes_system_ips and not b.nat:
            routes.append(("inet", f"{system_ip(i)}/32", uplinks[0].public))
        sw = f"{b.name}-lan"
        nodes.append(Node(sw, "switch"))
        links.append(Link(sw, "p0", b.name, "lan0"))
        ports = ["p0"]
        for j, h in enumerate(b.hosts, start=1):
            nodes.append(Node(h.name, "host"))
            links.append(Link(sw, f"p{j}", h.name, "eth0"))
            ports.append(f"p{j}")
            addrs.append((h.name, "eth0", str(h.address)))
            # LAN hosts use the tenant MTU, as the gateway's DHCP server would tell them (option 26)
            mtus.append((h.name, "eth0", tenant_mtu(1500)))
            routes.append((h.name, "default", str(topo.tenant.gateway)))
        bridges.append((sw, "sw", tuple(ports)))
        gws.append(GatewayPlan(b.name, system_ip(i), tuple(uplinks), "lan0", b.nat))
    return Plan(tuple(nodes), tuple(links), tuple(addrs), tuple(routes), tuple(bridges), tuple(masq),
                tuple(gws), tuple(mtus), controller, topo.tenant)


# --- built-ins ---------------------------------------------------------------


def _two_branch(name: str, nat: bool, underlay: bool) -> Topology:
    return Topology(
        name=name,
        branches=(
            Branch(name="b1", hosts=(Host(name="b1-h1", address=IPv4Interface("198.19.0.11/24")),)),
            Branch(name="b2", nat=nat, hosts=(Host(name="b2-h1", address=IPv4Interface("198.19.0.21/24")),)),
        ),
        underlay_routes_system_ips=underlay,
    )


def _three_branch(name: str) -> Topology:
    """Three sites, one host each (bN-h1 = 198.19.0.N1): a branch that turns hostile can be watched
    from the two others, each of which can still reach the third (tests/e2e/test_stolen_box.py)."""
    return Topology(
        name=name,
        branches=tuple(Branch(name=f"b{i}", hosts=(Host(name=f"b{i}-h1",
                                                        address=IPv4Interface(f"198.19.0.{i}1/24")),))
                       for i in (1, 2, 3)),
        underlay_routes_system_ips=True,
    )


def _lan_flood(name: str) -> Topology:
    """Two sites for the LAN flood test (tests/e2e/test_lan_flood.py): on b1's LAN switch a legitimate
    host b1-h1 (198.19.0.11) and the flooder b1-h2 (.12), so both sit behind the same gateway port;
    b2-h1 (.21) is the far end they talk to. A plan has one LAN port per branch: the second one of b1
    (lan1, with b1-h3 behind it) is added by lab/lan_flood.py."""
    return Topology(
        name=name,
        branches=(
            Branch(name="b1", hosts=(Host(name="b1-h1", address=IPv4Interface("198.19.0.11/24")),
                                     Host(name="b1-h2", address=IPv4Interface("198.19.0.12/24")))),
            Branch(name="b2", hosts=(Host(name="b2-h1", address=IPv4Interface("198.19.0.21/24")),)),
        ),
    )


def _appliance(name: str) -> Topology:
    """The appliance lab (lab/appliance_lab.py, issue 15): b1 and b2 (behind a NAT) are qemu guests booted
    from the image, b3 a gateway in a namespace (the userspace ESP engine); one host each, bN-h1 = .N1."""
    return Topology(
        name=name,
        branches=(Branch(name="b1", hosts=(Host(name="b1-h1", address=IPv4Interface("198.19.0.11/24")),)),
                  Branch(name="b2", nat=True, hosts=(Host(name="b2-h1", address=IPv4Interface("198.19.0.21/24")),)),
                  Branch(name="b3", hosts=(Host(name="b3-h1", address=IPv4Interface("198.19.0.31/24")),))),
    )


BUILTIN = {
    "two-branch": lambda: _two_branch("two-branch", nat=False, underlay=True),
    "two-branch-nat": lambda: _two_branch("two-branch-nat", nat=True, underlay=False),
    "three-branch": lambda: _three_branch("three-branch"),
    "lan-flood": lambda: _lan_flood("lan-flood"),
    "appliance": lambda: _appliance("appliance"),
}


def load(name_or_path: str) -> Topology:
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]()
    path = Path(name_or_path)
    if not path.exists():
        raise ValueError(f"unknown topology {name_or_path!r}: not one of {sorted(BUILTIN)} and no such file")
    return Topology.model_validate_json(path.read_text())

"""The gateway's desired configuration (schema version 1).

Everything that arrives from a file or, later, the controller is validated here,
at the edge, into frozen pydantic models. Nothing downstream reads nested dicts.
An invalid document raises ConfigError whose lines name the offending field
(``subnets[1].vni: ...``); callers keep whatever was running before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from nsg.model.base import Frozen
from nsg.model.evpn import EvpnConfig
from nsg.model.ipsec import IpsecConfig
from nsg.model.policy import PolicyConfig, parse_ref
from nsg.model.qos import QosConfig
from nsg.model.tenant_workloads import App, Vm
from nsg.model.upgrade import UpgradeTarget

SCHEMA_VERSION = 1

# RFC 7348 section 5: the VNI is 24 bits. 0 is left out: several VTEPs treat it
# as "no VNI", and a tenant never needs it.
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _ifname(value: str) -> str:
    # Linux IFNAMSIZ is 16 including the NUL; '/' and whitespace are illegal.
    if not _IFNAME_RE.match(value):
        raise ValueError("not a valid interface name (1-15 of letters, digits, '_', '.', '-')")
    return value


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("names are 1-63 of lowercase letters, digits, '_', '.', '-', starting alphanumeric")
    return value


IfName = Annotated[str, AfterValidator(_ifname)]
Name = Annotated[str, AfterValidator(_name)]


_Frozen = Frozen


def is_unicast(addr: IPv4Address) -> bool:
    """A host's address: not multicast, unspecified, loopback or the limited broadcast."""
    return not (addr.is_multicast or addr.is_unspecified or addr.is_loopback
                or addr == IPv4Address("255.255.255.255"))


def _unicast(addr: IPv4Address, what: str) -> None:
    if not is_unicast(addr):
        raise ValueError(f"{what} {addr} is not a unicast address")


class Uplink(_Frozen):
    """A WAN port. ``static`` carries its address and next hop; ``dhcp`` learns them."""

    name: Name
    interface: IfName
    mode: Literal["static", "dhcp"]
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    mtu: int = Field(default=1500, ge=1280, le=9000)
    # name servers the box uses on this uplink (a static one has no lease to name them; on a DHCP one
    # they replace the lease's option 6), in order, at most 3 (what a resolver reads of resolv.conf)
    dns: tuple[IPv4Address, ...] | None = Field(default=None, max_length=3)

    @model_validator(mode="after")
    def _check(self) -> Uplink:
        for a in self.dns or ():
            _unicast(a, "dns")
        if self.dns is not None and len(set(self.dns)) != len(self.dns):
            raise ValueError("dns lists a name server twice")
        if self.mode == "static":
            if self.address is None or self.gateway is None:
                raise ValueError("a static uplink needs both 'address' and 'gateway'")
            _unicast(self.address.ip, "address")
            if self.address.network.prefixlen < 31 and self.address.ip in (
                self.address.network.network_address,
                self.address.network.broadcast_address,
            ):
                raise ValueError(f"address {self.address} is the network or broadcast address")
            if self.gateway not in self.address.network or self.gateway == self.address.ip:
                raise ValueError(f"gateway {self.gateway} is not another host of {self.address.network}")
        elif self.address is not None or self.gateway is not None:
            raise ValueError("a dhcp uplink takes no 'address' or 'gateway' (the lease provides them)")
        return self


# A workload is one host with one NIC whose MAC nsg sets (AppSpec.mac, VmSpec.mac, from its name and
# address): its port (a container's veth, a VM's tap: nsg/policy/port_guard.py) holds at most 4 MACs:
# that MAC, the one before an address change (it stays in the set until it ages out, 300 s) and two to
# spare for a guest that sets its own; a workload never bridges others. A subnet whose max_macs is
# lower gives its workloads that. (Here, in the schema, because the controller's route budgets count it.)
WORKLOAD_MAX_MACS = 4


class PortSecurity(_Frozen):
    """A switch's port security on each LAN port of a subnet (table bridge nsg_port,
    nsg/policy/port_guard.py): a port holds at most ``max_macs`` source MACs, a MAC silent for the
    bridge's ageing time (300 s) frees its place, and new MACs are taken at most ``learn_rate`` per
    second after a burst of ``learn_burst``. A frame from any other new MAC is dropped and counted
    before the bridge learns it, so it never reaches EVPN nor the other sites. On by default; ``null``
    turns it off for the subnet (its overlay then only keeps the gateway-ARP guard)."""

    max_macs: int = Field(default=256, ge=1, le=65535)
    learn_rate: int = Field(default=20, ge=1, le=10000)  # new MACs per second, per port
    learn_burst: int = Field(default=40, ge=1, le=65535)  # new MACs at once before the rate applies


class Subnet(_Frozen):
    """A tenant L2 subnet: one bridge and one VXLAN device, the VNI shared by all sites."""

    name: Name
    vni: int = Field(ge=VNI_MIN, le=VNI_MAX)
    cidr: IPv4Network
    gateway: IPv4Address
    ports: tuple[IfName, ...] = ()
    port_security: PortSecurity | None = PortSecurity()  # security by default

    @model_validator(mode="after")
    def _check(self) -> Subnet:
        if self.cidr.prefixlen > 30:
            raise ValueError(f"cidr {self.cidr} leaves no room for hosts (longest prefix is /30)")
        if self.gateway not in self.cidr or self.gateway in (
            self.cidr.network_address,
            self.cidr.broadcast_address,
        ):
            raise ValueError(f"gateway {self.gateway} is not a host address of {self.cidr}")
        if len(set(self.ports)) != len(self.ports):
            raise ValueError("ports lists an interface twice")
        return self


class Peer(_Frozen):
    """Another site of the enterprise: its system IP and where its WAN answers."""

    name: Name
    system_ip: IPv4Address
    endpoint: IPv4Address
    # Who starts IKE: "auto" = a gateway behind a NAT, else the lower system IP;
    # "never" = the peer always calls us (it sits behind a NAT we cannot reach through).
    initiate: Literal["auto", "always", "never"] = "auto"
    # ipsec auth "ldevid"/"certificate": the device serial its certificate must carry (subject serialNumber)
    serial: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\x20-\x7e]+$")
    # ipsec auth "psk": the key of this pair of gateways only (never one key for every peer)
    psk: str | None = Field(default=None, min_length=16, max_length=256, repr=False)

    @model_validator(mode="after")
    def _check(self) -> Peer:
        _unicast(self.system_ip, "system_ip")
        _unicast(self.endpoint, "endpoint")
        return self


class UplinkService(_Frozen):
    """A service of the box reachable from its uplinks (the input guard drops everything else that is
    not IKE, ESP-in-UDP, DHCP or return traffic). The controller's co-located hub opens its device site."""

    protocol: Literal["tcp", "udp"]
    port: int = Field(ge=1, le=65535)


class GatewayConfig(_Frozen):
    schema_version: Literal[1]
    generation: int = Field(default=0, ge=0)
    system_ip: IPv4Address
    transport: Literal["plain", "esp"] = "plain"
    ipsec: IpsecConfig | None = None
    evpn: EvpnConfig | None = None  # BGP EVPN control plane; without it: static flood lists to every peer
    behind_nat: bool = False  # this gateway's uplinks are NATed: it starts every IKE SA
    uplinks: tuple[Uplink, ...] = Field(min_length=1)
    subnets: tuple[Subnet, ...] = ()
    peers: tuple[Peer, ...] = ()
    apps: tuple[App, ...] = Field(default=(), max_length=64)  # tenant containers on the subnets
    vms: tuple[Vm, ...] = Field(default=(), max_length=16)  # tenant VMs on the subnets
    policy: PolicyConfig | None = None  # firewall and breakout; without it nothing is filtered
    qos: QosConfig | None = None  # shaping by forwarding class on the uplinks; without it none
    uplink_services: tuple[UplinkService, ...] = Field(default=(), max_length=32)
    upgrade: UpgradeTarget | None = None  # the release to run (nsg/model/upgrade.py); the box decides when

    def _check_peer_auth(self) -> None:
        auth = self.ipsec.auth if self.ipsec is not None else None
        for i, p in enumerate(self.peers):
            if auth == "psk" and p.psk is None:
                raise ValueError(f"peers[{i}].psk: ipsec auth 'psk' needs a key for each peer ({p.name!r} has none)")
            if auth != "psk" and p.psk is not None:
                raise ValueError(f"peers[{i}].psk: only with ipsec auth 'psk'")
            if auth == "ldevid" and p.serial is None:
                raise ValueError(f"peers[{i}].serial: ipsec auth 'ldevid' binds each peer to its device serial "
                                 f"({p.name!r} has none)")
        psks = [p.psk for p in self.peers if p.psk is not None]
        if len(set(psks)) != len(psks):
            raise ValueError("peers[].psk: two peers share a key; each pair of gateways has its own")

    @model_validator(mode="after")
    def _check(self) -> GatewayConfig:
        _unicast(self.system_ip, "system_ip")
        if self.transport == "esp" and self.ipsec is None:
            raise ValueError("transport 'esp' needs an 'ipsec' section")
        _unique("uplinks", "name", [u.name for u in self.uplinks])
        _unique("uplinks", "interface", [u.interface for u in self.uplinks])
        _unique("subnets", "name", [s.name for s in self.subnets])
        _unique("subnets", "vni", [s.vni for s in self.subnets])
        _unique("peers", "name", [p.name for p in self.peers])
        _unique("peers", "system_ip", [p.system_ip for p in self.peers])
        for i, a in enumerate(self.subnets):
            for b in self.subnets[i + 1 :]:
                if a.cidr.overlaps(b.cidr):
                    raise ValueError(f"subnets '{a.name}' ({a.cidr}) and '{b.name}' ({b.cidr}) overlap")
            if self.system_ip in a.cidr:
                raise ValueError(f"system_ip {self.system_ip} lies inside subnet '{a.name}' ({a.cidr})")
        ports = [p for s in self.subnets for p in s.ports]
        _unique("subnets", "ports", ports)
        wan = {u.interface for u in self.uplinks}
        for p in ports:
            if p in wan or p == "lo":
                raise ValueError(f"port {p} is an uplink or loopback, not a LAN port")
        for p in self.peers:
            if p.system_ip == self.system_ip:
                raise ValueError(f"peer '{p.name}' has this gateway's own system_ip {self.system_ip}")
        self._check_peer_auth()
        _unique("apps", "name", [a.name for a in self.apps])
        _unique("vms", "name", [v.name for v in self.vms])
        _unique("apps and vms", "address", [a.address for a in (*self.apps, *self.vms)])
        for section, items in (("apps", self.apps), ("vms", self.vms)):
            for i, app in enumerate(items):
                home = next((s for s in self.subnets if s.name == app.subnet), None)
                if home is None:
                    raise ValueError(f"{section}[{i}].subnet: no subnet named {app.subnet!r}")
                if app.address not in home.cidr or app.address in (home.gateway, home.cidr.network_address,
                                                                   home.cidr.broadcast_address):
                    raise ValueError(f"{section}[{i}].address {app.address} is not a host address of {home.cidr} "
                                     "(other than its gateway)")
        if self.policy is not None:
            self._check_policy(self.policy)
        for i, shaped in enumerate(self.qos.uplinks if self.qos else ()):
            if shaped.uplink not in {u.name for u in self.uplinks}:
                raise ValueError(f"qos.uplinks[{i}].uplink: no uplink named {shaped.uplink!r}")
        known = {"subnet": {s.name for s in self.subnets}, "app": {a.name for a in self.apps},
                 "vm": {v.name for v in self.vms}}
        for i, lim in enumerate(self.qos.limiters if self.qos else ()):
            kind, name = parse_ref(lim.target)
            if kind in known and name not in known[kind]:
                raise ValueError(f"qos.limiters[{i}].target: no {kind} named {name!r}")
        if self.evpn is not None:  # EVPN route distinguishers are system IP : VNI (low 16 bits)
            low = [s.vni & 0xFFFF for s in self.subnets]
            if len(set(low)) != len(low):
                raise ValueError("with evpn, subnet VNIs must differ in their low 16 bits (they make the "
                                 "route distinguishers)")
        for i, ep in enumerate(self.evpn.prefixes if self.evpn else ()):
            home = next((s for s in self.subnets if ep.via in s.cidr), None)
            if home is None or ep.via in (home.gateway, home.cidr.network_address, home.cidr.broadcast_address):
                raise ValueError(f"evpn.prefixes[{i}].via {ep.via} is not a host of one of the subnets")
            for s in self.subnets:
                if ep.prefix.overlaps(s.cidr):
                    raise ValueError(f"evpn.prefixes[{i}].prefix {ep.prefix} overlaps subnet '{s.name}' ({s.cidr})")
        for i, rp in enumerate(self.evpn.remote_prefixes if self.evpn else ()):
            if rp.system_ip == self.system_ip:
                raise ValueError(f"evpn.remote_prefixes[{i}].system_ip {rp.system_ip} is this gateway's own")
            for s in self.subnets:  # a route around or inside a subnet would take the subnet's traffic
                if rp.prefix.overlaps(s.cidr):
                    raise ValueError(f"evpn.remote_prefixes[{i}].prefix {rp.prefix} overlaps subnet '{s.name}' "
                                     f"({s.cidr})")
        seen: set = set()
        for i, rl in enumerate(self.evpn.remote_limits if self.evpn else ()):
            if rl.system_ip == self.system_ip:
                raise ValueError(f"evpn.remote_limits[{i}].system_ip {rl.system_ip} is this gateway's own")
            if rl.system_ip in seen:
                raise ValueError(f"evpn.remote_limits[{i}].system_ip {rl.system_ip} is listed twice")
            seen.add(rl.system_ip)
        return self


    def _check_policy(self, pol: PolicyConfig) -> None:
        """The policy's references name things this config has; each subnet is in one tenant at most."""
        names = {"subnet": {s.name for s in self.subnets}, "app": {a.name for a in self.apps},
                 "vm": {v.name for v in self.vms}, "group": {g.name for g in pol.groups}}

        def ref(text: str, where: str) -> None:
            kind, name = parse_ref(text)
            if kind in names and name not in names[kind]:
                raise ValueError(f"{where}: no {kind} named {name!r}")

        for i, g in enumerate(pol.groups):
            for j, m in enumerate(g.members):
                ref(m, f"policy.groups[{i}].members[{j}]")
        owner: dict[str, str] = {}
        for i, t in enumerate(pol.tenants):
            for j, s in enumerate(t.subnets):
                ref(f"subnet:{s}", f"policy.tenants[{i}].subnets[{j}]")
                if s in owner:
                    raise ValueError(f"policy.tenants[{i}].subnets[{j}]: {s!r} is already in tenant {owner[s]!r}")
                owner[s] = t.name
            for j, e in enumerate(t.acl):
                ref(e.src, f"policy.tenants[{i}].acl[{j}].src")
                ref(e.dst, f"policy.tenants[{i}].acl[{j}].dst")
        uplinks = {u.name for u in self.uplinks}
        for i, b in enumerate(pol.breakout):
            ref(f"subnet:{b.subnet}", f"policy.breakout[{i}].subnet")
            if b.uplink not in uplinks:
                raise ValueError(f"policy.breakout[{i}].uplink: no uplink named {b.uplink!r}")


def _unique(section: str, field: str, values: Iterable[object]) -> None:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{section}: {field} {v} is used twice")
        seen.add(v)


class ConfigError(ValueError):
    """The configuration document is invalid. Local input's fault; nothing was applied."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration: " + "; ".join(problems))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(document)"


def parse_config(doc: object, source: str = "config") -> GatewayConfig:
    """Validate a decoded JSON document. Raises ConfigError naming each bad field."""
    try:
        return GatewayConfig.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_loc(loc)}: {msg}")
        raise ConfigError(source, problems) from None


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), [f"not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"]) from None
    return parse_config(doc, str(path))


def config_document(cfg: GatewayConfig) -> dict:
    """The config as a JSON document (to a file, over the channel). An absent ``upgrade`` section is left
    out rather than sent as null: a gateway whose release predates it still takes the document."""
    return cfg.model_dump(mode="json", exclude={"upgrade"} if cfg.upgrade is None else None)


def dump_config(cfg: GatewayConfig) -> str:
    return json.dumps(config_document(cfg), indent=2, sort_keys=False) + "\n"


"""What each route reflector client owns: the reflector's view of the enterprise, typed and validated.

Every client session is bound to one gateway by its source address, which is that gateway's system
IP (the session runs inside the gateway's ESP tunnel to the hub, and IKE authenticated the tunnel's
traffic selector, so the address is the gateway's). The view says what that gateway may announce:

- ``system_ip``: the only acceptable next hop, VTEP and originator, and (unless ``router_id`` says
  otherwise) the only BGP identifier its session may present;
- ``rds``: its route distinguishers. Gateways make them type 1, system IP : VNI (low 16 bits)
  (nsg/evpn/originate.py ``route_distinguishers``); without a list, any type-1 RD whose
  administrator is the system IP is accepted;
- ``vnis``: the VNIs (labels, PMSI labels, route targets) it may use;
- ``prefixes``: its type-5 prefixes, exactly (the gateway config's ``evpn.prefixes``);
- ``hosts``: addresses of its own workloads (apps, VMs), which no other gateway may announce;
- ``max_routes``: overrides the reflector's per-client limit (from the configs: the gateway's route
  budget, controller/route_budget.py).

The view is a JSON document (``--owners FILE``)::

    {"asn": 65000,
     "subnets": {"100": {"cidr": "198.19.0.0/24", "gateway": "198.19.0.1"}},
     "clients": {"198.19.255.1": {"name": "b1", "vnis": [100], "rds": ["198.19.255.1:100"],
                                  "prefixes": ["203.0.113.0/24"], "hosts": ["198.19.0.5"]}}}

``view_from_configs`` derives it from the gateway configs the controller renders; ``ViewFile`` reads
it from a file and notices when the file changes. Another source (the controller's API) only has to
produce a ``ReflectorView``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from bgp.constants import RdType
from bgp.evpn_nlri import RouteDistinguisher
from controller.route_budget import route_budget
from nsg.model import GatewayConfig
from nsg.model.base import Frozen

VNI_MAX = (1 << 24) - 1
RD_NUMBER_MASK = 0xFFFF  # gateways' RDs: system IP : VNI (its low 16 bits), as nsg/evpn/originate.py makes them


class ViewError(ValueError):
    """The view (file) is unusable; the message names the source and the field. Our operator's fault,
    not a client's: the reflector keeps the view it had."""


class SubnetInfo(Frozen):
    """A tenant subnet (one VNI, stretched across the sites)."""

    cidr: IPv4Network
    gateway: IPv4Address | None = None  # the subnet's gateway address: every site's, no host may claim it


class ClientOwnership(Frozen):
    system_ip: IPv4Address
    name: str | None = Field(default=None, max_length=128)
    router_id: IPv4Address | None = None  # the BGP identifier it must use; default: its system IP
    vnis: frozenset[int] = frozenset()
    rds: frozenset[str] | None = None  # "IPv4:number" / "AS:number"; None: type-1 RDs of the system IP
    prefixes: tuple[IPv4Network, ...] = Field(default=(), max_length=4096)
    hosts: frozenset[IPv4Address] = frozenset()
    max_routes: int | None = Field(default=None, ge=1, le=10_000_000)

    @field_validator("vnis")
    @classmethod
    def _vnis(cls, v: frozenset[int]) -> frozenset[int]:
        bad = sorted(n for n in v if not 1 <= n <= VNI_MAX)
        if bad:
            raise ValueError(f"VNI {bad[0]} is outside 1..{VNI_MAX}")
        return v

    @field_validator("rds")
    @classmethod
    def _rds(cls, v: frozenset[str] | None) -> frozenset[str] | None:
        if v is None:
            return v
        out = set()
        for rd in v:
            admin, sep, number = rd.rpartition(":")
            try:
                if not sep or not number.isdigit():
                    raise ValueError
                out.add(str(RouteDistinguisher.ipv4(admin, int(number))) if "." in admin
                        else f"{int(admin)}:{int(number)}")
            except ValueError:
                raise ValueError(f"route distinguisher {rd!r} is not ADDRESS:NUMBER or AS:NUMBER") from None
        return frozenset(out)

    @property
    def bgp_id(self) -> str:
        return str(self.router_id or self.system_ip)

    def owns_rd(self, rd: RouteDistinguisher) -> bool:
        if self.rds is not None:
            return str(rd) in self.rds
        return rd.rd_type == RdType.IPV4 and rd.value[:4] == self.system_ip.packed


class ReflectorView(Frozen):
    asn: int = Field(ge=1, le=(1 << 32) - 1)
    subnets: dict[int, SubnetInfo] = {}  # VNI -> subnet; optional: with it, hosts' IPs must lie inside
    clients: dict[IPv4Address, ClientOwnership]

    @model_validator(mode="before")
    @classmethod
    def _keys_are_system_ips(cls, data: Any) -> Any:
        """The client's key is its system IP; the entry may repeat it, not contradict it."""
        if isinstance(data, dict) and isinstance(data.get("clients"), dict):
            clients = {}
            for key, entry in data["clients"].items():
                if isinstance(entry, dict) and "system_ip" in entry and str(entry["system_ip"]) != str(key):
                    raise ValueError(f"clients.{key}.system_ip is {entry['system_ip']}, not its key")
                clients[key] = {**entry, "system_ip": str(key)} if isinstance(entry, dict) else entry
            data = {**data, "clients": clients}
        return data

    @model_validator(mode="after")
    def _check(self) -> ReflectorView:
        ids: dict[str, str] = {}
        hosts: dict[IPv4Address, str] = {}
        for ip, own in self.clients.items():
            if own.bgp_id in ids:
                raise ValueError(f"clients.{ip}.router_id {own.bgp_id} is also {ids[own.bgp_id]}'s")
            ids[own.bgp_id] = str(ip)
            for h in own.hosts:
                if h in hosts:
                    raise ValueError(f"clients.{ip}.hosts: {h} is also {hosts[h]}'s")
                hosts[h] = str(ip)
            unknown = sorted(own.vnis - set(self.subnets)) if self.subnets else []
            if unknown:
                raise ValueError(f"clients.{ip}.vnis: VNI {unknown[0]} is not in subnets")
        for vni in self.subnets:
            if not 1 <= vni <= VNI_MAX:
                raise ValueError(f"subnets: VNI {vni} is outside 1..{VNI_MAX}")
        return self

    def owner_of_host(self, ip: IPv4Address) -> IPv4Address | None:
        return next((sip for sip, own in self.clients.items() if ip in own.hosts), None)


def parse_view(text: str | bytes, source: str) -> ReflectorView:
    """The view from its JSON text; ViewError naming ``source`` and the first bad field."""
    try:
        return ReflectorView.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"{p}: " if i == len(err["loc"]) - 1 else f"{p}." for i, p in enumerate(err["loc"]))
        raise ViewError(f"{source}: {where}{err['msg'].removeprefix('Value error, ')}"
                        + (f" ({exc.error_count()} errors)" if exc.error_count() > 1 else "")) from None


def dump_view(view: ReflectorView) -> str:
    return view.model_dump_json(indent=1, exclude_none=True)


@dataclass
class ViewFile:
    """The view in a file: ``load`` reads it; ``changed`` says whether the file is another one now
    (mtime, size or inode), so a poller re-reads it only then."""

    path: Path
    _stamp: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        return self._stat() != self._stamp

    def load(self) -> ReflectorView:
        stamp = self._stat()
        try:
            text = self.path.read_bytes()
        except OSError as exc:
            self._stamp = stamp  # don't retry a missing file on every poll; SIGHUP or a new file will
            raise ViewError(f"{self.path}: {exc.strerror}") from None
        self._stamp = stamp
        return parse_view(text, str(self.path))


def view_from_configs(configs: Mapping[str, GatewayConfig], asn: int | None = None) -> ReflectorView:
    """The view from the gateway configs the controller renders (controller.mesh.render): every gateway
    with EVPN is a client owning its system IP, its VNIs and their RDs, its type-5 prefixes and its
    workloads' addresses, and limited to the routes its LAN can honestly announce (its route budget:
    controller/route_budget.py; none when a subnet's LAN is unbounded: the reflector's default). Pure."""
    subnets: dict[int, SubnetInfo] = {}
    clients: dict[IPv4Address, ClientOwnership] = {}
    asns = {asn} if asn is not None else set()
    for name, cfg in sorted(configs.items()):
        if cfg.evpn is None:
            continue  # no BGP session (the hub, a gateway without EVPN)
        asns.add(cfg.evpn.asn)
        for s in cfg.subnets:
            info = SubnetInfo(cidr=s.cidr, gateway=s.gateway)
            if subnets.setdefault(s.vni, info) != info:
                raise ViewError(f"gateway {name}: subnet VNI {s.vni} is {s.cidr} here, {subnets[s.vni].cidr} elsewhere")
        sysip = IPv4Address(str(cfg.system_ip))
        clients[sysip] = ClientOwnership(
            system_ip=sysip, name=name, vnis=frozenset(s.vni for s in cfg.subnets),
            rds=frozenset(f"{sysip}:{s.vni & RD_NUMBER_MASK}" for s in cfg.subnets),
            prefixes=tuple(ep.prefix for ep in cfg.evpn.prefixes),
            hosts=frozenset(IPv4Address(str(w.address)) for w in (*cfg.apps, *cfg.vms)),
            max_routes=route_budget(cfg))
    if len(asns) > 1:
        raise ViewError(f"gateways use several EVPN ASNs: {sorted(asns)}")
    if not asns:
        raise ViewError("no gateway runs EVPN and no ASN was given")
    try:
        return ReflectorView(asn=asns.pop(), subnets=subnets, clients=clients)
    except ValidationError as exc:
        raise ViewError(f"gateway configs: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None

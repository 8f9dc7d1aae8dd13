"""Value types shared by the desired-state builder, the planner and the adapters.

All frozen, all comparable: the planner is set arithmetic over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

# Route and address protocol number that marks what nsg installed
# (/etc/iproute2/rt_protos leaves 250 unassigned). Anything without it is not
# ours and is never deleted.
NSG_PROTO = 250
# ifalias on links nsg created; a link without it is never deleted.
OWNER_ALIAS = "nsg"
ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class VxlanSpec:
    vni: int
    local: str
    port: int = 4789
    learning: bool = False
    # 1 = "inherit": the tenant packet's TOS byte (DSCP) goes into the VXLAN outer header, and from
    # there the ESP engine copies it to the ESP packet (RFC 4303 tunnel mode, RFC 2983), so QoS on
    # the uplink can classify encrypted traffic by the DSCP its sender chose.
    tos: int = 1


@dataclass(frozen=True)
class LinkSpec:
    """A link nsg creates and owns."""

    name: str
    kind: Literal["bridge", "vxlan"]
    mtu: int
    master: str | None = None
    mac: str | None = None
    vxlan: VxlanSpec | None = None
    # As a bridge port (EVPN's VXLAN ports): MAC learning and ARP/ND suppression (RFC 7432
    # section 10: the gateway answers for remote hosts). None: left as the kernel has it.
    port_flags: PortFlags | None = None


@dataclass(frozen=True)
class PortFlags:
    learning: bool
    neigh_suppress: bool


@dataclass(frozen=True)
class LinkState:
    """A link as the kernel reports it."""

    name: str
    index: int
    kind: str | None
    mtu: int
    up: bool
    master: str | None = None
    alias: str | None = None
    mac: str | None = None
    vxlan: VxlanSpec | None = None
    port_flags: PortFlags | None = None  # when it is a bridge port

    @property
    def owned(self) -> bool:
        return self.alias == OWNER_ALIAS


@dataclass(frozen=True, order=True)
class Addr:
    ifname: str
    cidr: str  # "198.19.0.1/24"


# Fdb and Neigh have slots: a gateway holds two of the first and one of the second per remote MAC+IP
# (10,000s in a flood), in the desired state and again in every snapshot of the kernel.


@dataclass(frozen=True, order=True, slots=True)
class Fdb:
    """A VXLAN device's own entry (MAC -> remote VTEP ``dst``), or with ``master`` the bridge's entry
    for a remote MAC, learned from EVPN (extern_learn) and pointing at the VXLAN port (dst "")."""

    ifname: str
    mac: str
    dst: str
    master: bool = False


@dataclass(frozen=True, order=True, slots=True)
class Neigh:
    """A static neighbour entry on a bridge (ARP suppression: the gateway answers for remote hosts)."""

    ifname: str
    ip: str
    mac: str


@dataclass(frozen=True, order=True)
class Route:
    dst: str  # "198.19.255.2/32", "0.0.0.0/0"
    ifname: str
    gateway: str | None = None
    src: str | None = None
    metric: int = 0


class NeighRecord(NamedTuple):
    """A neighbour or FDB entry as netlink carries it (ndmsg and the attributes nsg reads), as the
    netlink adapter reads them from dumps and notifications: compact, one at a time."""

    present: bool  # RTM_NEWNEIGH (and every entry of a dump); False: RTM_DELNEIGH
    family: int  # AF_BRIDGE: an FDB entry; AF_INET: an ARP entry
    ifindex: int
    state: int  # NUD_*
    flags: int  # NTF_*
    mac: str | None  # NDA_LLADDR, "02:aa:..."
    dst: str | None  # NDA_DST: the neighbour's IP, or a VXLAN entry's remote VTEP
    master: int | None  # NDA_MASTER: the bridge of an FDB entry


class LinkRecord(NamedTuple):
    """A link notification or dump entry, reduced to what the neighbour watch needs."""

    present: bool  # RTM_NEWLINK (or a dump's); False: RTM_DELLINK
    index: int
    name: str | None
    master: int | None
    kind: str | None  # IFLA_INFO_KIND: "bridge", "vxlan", "veth", ...


@dataclass(frozen=True)
class Snapshot:
    """What the kernel has, as far as nsg cares."""

    links: Mapping[str, LinkState] = field(default_factory=dict)
    addrs: frozenset[Addr] = frozenset()  # every IPv4 address
    owned_addrs: frozenset[Addr] = frozenset()  # those carrying NSG_PROTO
    fdb: frozenset[Fdb] = frozenset()  # entries with a remote dst on owned vxlan links
    routes: frozenset[Route] = frozenset()  # main-table IPv4 routes carrying NSG_PROTO
    neighbors: frozenset[Neigh] = frozenset()  # permanent IPv4 neighbours on owned bridges


@dataclass(frozen=True)
class Desired:
    links: tuple[LinkSpec, ...] = ()
    ports: Mapping[str, str] = field(default_factory=dict)  # existing interface -> owned bridge
    up: frozenset[str] = frozenset()  # existing interfaces to bring up (lo, uplinks, the ESP TUN)
    mtus: Mapping[str, int] = field(default_factory=dict)  # MTUs of existing interfaces (the ESP TUN)
    addrs: frozenset[Addr] = frozenset()
    fdb: frozenset[Fdb] = frozenset()
    routes: frozenset[Route] = frozenset()
    neighbors: frozenset[Neigh] = frozenset()
    # Ports of owned bridges that workloads' supervisors wire (apps' veths, VMs' TAPs): never released.
    guests: frozenset[str] = frozenset()


# --- operations -------------------------------------------------------------


@dataclass(frozen=True)
class CreateLink:
    spec: LinkSpec

    def __str__(self) -> str:
        extra = f" vni {self.spec.vxlan.vni} local {self.spec.vxlan.local}" if self.spec.vxlan else ""
        return f"create {self.spec.kind} {self.spec.name} mtu {self.spec.mtu}{extra}"


@dataclass(frozen=True)
class DeleteLink:
    name: str

    def __str__(self) -> str:
        return f"delete link {self.name}"


@dataclass(frozen=True)
class SetMtu:
    name: str
    mtu: int

    def __str__(self) -> str:
        return f"set {self.name} mtu {self.mtu}"


@dataclass(frozen=True)
class SetMac:
    name: str
    mac: str

    def __str__(self) -> str:
        return f"set {self.name} address {self.mac}"


@dataclass(frozen=True)
class SetAlias:
    """Mark a link as nsg's (the kernel ignores IFLA_IFALIAS on RTM_NEWLINK, so this
    is a second step; a same-kind link left unmarked by a crash is adopted)."""

    name: str

    def __str__(self) -> str:
        return f"set {self.name} alias {OWNER_ALIAS}"


@dataclass(frozen=True)
class SetMaster:
    name: str
    master: str | None

    def __str__(self) -> str:
        return f"set {self.name} master {self.master}" if self.master else f"set {self.name} nomaster"


@dataclass(frozen=True)
class SetPortFlags:
    name: str
    flags: PortFlags

    def __str__(self) -> str:
        onoff = {True: "on", False: "off"}
        return (f"set bridge port {self.name} learning {onoff[self.flags.learning]} "
                f"neigh_suppress {onoff[self.flags.neigh_suppress]}")


@dataclass(frozen=True)
class SetUp:
    name: str

    def __str__(self) -> str:
        return f"set {self.name} up"


@dataclass(frozen=True)
class AddAddr:
    addr: Addr

    def __str__(self) -> str:
        return f"add address {self.addr.cidr} dev {self.addr.ifname}"


@dataclass(frozen=True)
class DelAddr:
    addr: Addr

    def __str__(self) -> str:
        return f"delete address {self.addr.cidr} dev {self.addr.ifname}"


@dataclass(frozen=True)
class AddFdb:
    fdb: Fdb

    def __str__(self) -> str:
        if self.fdb.master:
            return f"add fdb {self.fdb.mac} dev {self.fdb.ifname} master extern_learn"
        return f"append fdb {self.fdb.mac} dev {self.fdb.ifname} dst {self.fdb.dst}"


@dataclass(frozen=True)
class DelFdb:
    fdb: Fdb

    def __str__(self) -> str:
        if self.fdb.master:
            return f"delete fdb {self.fdb.mac} dev {self.fdb.ifname} master"
        return f"delete fdb {self.fdb.mac} dev {self.fdb.ifname} dst {self.fdb.dst}"


@dataclass(frozen=True)
class AddNeigh:
    neigh: Neigh

    def __str__(self) -> str:
        return f"add neighbour {self.neigh.ip} lladdr {self.neigh.mac} dev {self.neigh.ifname}"


@dataclass(frozen=True)
class DelNeigh:
    neigh: Neigh

    def __str__(self) -> str:
        return f"delete neighbour {self.neigh.ip} lladdr {self.neigh.mac} dev {self.neigh.ifname}"


def _route_text(r: Route) -> str:
    via = f" via {r.gateway}" if r.gateway else ""
    src = f" src {r.src}" if r.src else ""
    return f"{r.dst}{via} dev {r.ifname}{src} metric {r.metric}"


@dataclass(frozen=True)
class AddRoute:
    route: Route

    def __str__(self) -> str:
        return "add route " + _route_text(self.route)


@dataclass(frozen=True)
class DelRoute:
    route: Route

    def __str__(self) -> str:
        return "delete route " + _route_text(self.route)


Op = (
    CreateLink | DeleteLink | SetAlias | SetMtu | SetMac | SetMaster | SetPortFlags | SetUp | AddAddr | DelAddr
    | AddFdb | DelFdb | AddRoute | DelRoute | AddNeigh | DelNeigh
)


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    waiting: tuple[str, ...] = ()  # desired items held back because something they need is absent

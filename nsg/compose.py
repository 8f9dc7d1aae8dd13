"""Config + leases + EVPN RIB view + probes -> one frozen DesiredState. Pure: no I/O, no clocks.

Everything derived is computed here once (the tenant MTU, the local IP, the RIB's FDB, neighbour and
route entries) and handed to every subsystem that needs it, so no subsystem reads another's result.
The parts, in the order nsg.engine sets them (DESIRED_ORDER):

  dhcp        uplinks that run a DHCP client
  resolver    the box's resolv.conf: the uplinks' configured name servers, else their leases' (nsg/resolver.py)
  guard       the box's own input guard (nsg.policy.guard), before anything is up
  policy      the tenant firewall (nftables)
  esp_engine  transport "esp": the ESP engine (its TUN exists before routes lead into it)
  dataplane   bridges, VXLAN, addresses, routes, FDB, neighbours (nsg.dataplane Desired)
  port_guard  LAN and workload port MAC limits and the overlay frame guard (nsg.policy.port_guard), on
              the bridges just made (matched by name; a millisecond after the dataplane in the same
              pass) and before the workloads part: an app's veth and a VM's TAP are named from the
              config, so they are guarded before they exist
  ike         IKEv2 peerings (once the routes are in place), local IP, the loaded credentials
  qos         tc shaping plan
  evpn        BGP EVPN toward the config's peers; the RIB then feeds the dataplane
  workloads   apps and VMs, with the tenant MTU computed here
  upgrade     the release the controller wants (nsg/subsystems/upgrade.py); last: it never fails a config,
              and a box that reboots into a new slot has applied everything else first
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from nsg.dataplane.desired import bridge_name, build_desired, vxlan_name
from nsg.dataplane.mtu import tenant_mtu
from nsg.dataplane.types import Desired, Fdb, Neigh, Route
from nsg.model import GatewayConfig
from nsg.model.ipsec import IpsecConfig
from nsg.model.upgrade import UpgradeTarget
from nsg.policy.guard import Guard, guard_for
from nsg.policy.port_guard import PortGuard, WorkloadPort, port_guard_for
from nsg.policy.tc import QosPlan, plan
from nsg.resolver import gather
from nsg.uplinks.lease import Lease

if TYPE_CHECKING:
    from nsg.tunnels import Credentials

DESIRED_ORDER = ("dhcp", "resolver", "guard", "policy", "esp_engine", "dataplane", "port_guard", "ike", "qos", "evpn",
                 "workloads", "upgrade")
DEFAULT_MTU = 1500


class ComposeError(ValueError):
    """The config and what the box learned cannot make a desired state (a local fault: e.g. a lease's
    MTU leaves no room for a tenant MTU). ``what`` names the part that could not be built."""

    def __init__(self, what: str, message: str):
        super().__init__(f"cannot build the desired state: {what}: {message}")
        self.what = what
        self.message = message


@dataclass(frozen=True)
class EvpnView:
    """What the EVPN RIB wants in the kernel now (read from nsg.evpn.control.EvpnControl).

    ``devices``: when given, every entry is on one of these devices (EvpnControl.devices: the
    bridges and VXLAN devices of the config it runs). If the config composed has them all, the
    entries are taken as they are, the same frozenset objects: with an unchanged RIB the dataplane
    part then compares equal without looking at tens of thousands of entries (a resync costs
    nothing proportional to the RIB here). Without it, entries on other devices are left out one
    by one."""

    fdb: frozenset[Fdb] = frozenset()
    neighbors: frozenset[Neigh] = frozenset()
    routes: frozenset[Route] = frozenset()
    devices: frozenset[str] | None = None


@dataclass(frozen=True)
class DhcpPart:
    uplinks: tuple[tuple[str, str], ...] = ()  # (uplink name, interface)


@dataclass(frozen=True)
class ResolverPart:
    nameservers: tuple[str, ...] = ()  # per uplink its config's dns, else its lease's option 6 (at most 3)
    search: tuple[str, ...] = ()  # the leases' option 15 domains


@dataclass(frozen=True)
class PolicyPart:
    """None config: no policy wanted (one in force goes)."""

    inputs: tuple = ()  # what NftPolicy.apply_config reads: equality decides "no changes"
    uplinks: tuple[tuple[str, str], ...] = ()
    config: GatewayConfig | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EspEnginePart:
    enabled: bool = False
    ipsec: IpsecConfig | None = None
    kernel_esp: bool = False  # the probe's answer: kernel XFRM, else the userspace engine (TUN)


@dataclass(frozen=True)
class IkePart:
    """``credentials``: loaded once per config and LDevID renewal (nsg.preflight); the part changes
    with their ``epoch`` (a renewal) and with the ipsec section in ``inputs``, not with key bytes."""

    enabled: bool = False
    local_ip: str = "0.0.0.0"
    inputs: tuple = ()  # system IP, NAT, peers, ipsec section
    credentials_epoch: int = 0  # bumped when the LDevID was renewed (the credentials were loaded again)
    config: GatewayConfig | None = field(default=None, compare=False)
    credentials: Credentials | None = field(default=None, compare=False)


@dataclass(frozen=True)
class QosPart:
    plan: QosPlan | None = None  # None: no shaping wanted (one in force goes)


@dataclass(frozen=True)
class EvpnPart:
    config: GatewayConfig | None = None  # None: no evpn section (a running speaker is left as it is)
    local_ip: str = "0.0.0.0"
    bridges: tuple[tuple[str, int], ...] = ()  # bridge name, VNI: where local MACs are learned


@dataclass(frozen=True)
class WorkloadsPart:
    mtu: int = DEFAULT_MTU
    apps: Mapping = field(default_factory=dict)  # name -> containers.spec.AppSpec
    vms: Mapping = field(default_factory=dict)  # name -> VmSpec


@dataclass(frozen=True)
class UpgradePart:
    target: UpgradeTarget | None = None  # None: no upgrade asked for


@dataclass(frozen=True)
class DesiredState:
    dhcp: DhcpPart
    resolver: ResolverPart
    guard: Guard
    policy: PolicyPart
    esp_engine: EspEnginePart
    dataplane: Desired
    port_guard: PortGuard
    ike: IkePart
    qos: QosPart
    evpn: EvpnPart
    workloads: WorkloadsPart
    upgrade: UpgradePart = UpgradePart()
    tenant_mtu: int = DEFAULT_MTU
    local_ip: str = "0.0.0.0"


def local_ip(cfg: GatewayConfig, leases: Mapping[str, Lease]) -> str:
    """The first uplink's address (static, else its lease): IKE's and BGP's local address."""
    for u in cfg.uplinks:
        if u.address is not None:
            return str(u.address.ip)
        if u.name in leases:
            return str(leases[u.name].address.ip)
    return "0.0.0.0"


def _name_sources(cfg: GatewayConfig, leases: Mapping[str, Lease]):
    """Per uplink, in order: its configured name servers, else its DHCP lease's (and the lease's domain)."""
    for u in cfg.uplinks:
        lease = leases.get(u.name) if u.mode == "dhcp" else None
        if u.dns is not None:
            yield u.dns, lease.domain if lease is not None else None
        elif lease is not None:
            yield lease.dns, lease.domain


def wan_mtu(cfg: GatewayConfig, leases: Mapping[str, Lease]) -> int:
    """The smallest uplink MTU (a lease may lower an uplink's; an uplink without a lease counts its own)."""
    mtus = []
    for u in cfg.uplinks:
        lease = leases.get(u.name) if u.mode != "static" else None
        mtus.append(min(u.mtu, lease.mtu) if lease is not None and lease.mtu else u.mtu)
    return min(mtus) if mtus else DEFAULT_MTU


def _evpn_devices(cfg: GatewayConfig) -> frozenset[str]:
    return frozenset({bridge_name(s.vni) for s in cfg.subnets} | {vxlan_name(s.vni) for s in cfg.subnets})


def _with_entries(desired: Desired, view: EvpnView) -> Desired:
    """The view's entries added to a Desired built without them, keeping the view's own frozensets
    where the Desired has none of its own (with EVPN it has no FDB or neighbour entries)."""
    return replace(desired, fdb=desired.fdb | view.fdb if desired.fdb else view.fdb,
                   neighbors=desired.neighbors | view.neighbors if desired.neighbors else view.neighbors,
                   routes=desired.routes | view.routes)


def compose(cfg: GatewayConfig, leases: Mapping[str, Lease] | None = None, evpn_view: EvpnView | None = None,
            kernel_esp: bool = False, credentials: Credentials | None = None) -> DesiredState:
    """``kernel_esp``: the probe found kernel ESP (XFRM); else transport "esp" routes into the
    userspace engine's TUN. ``credentials``: the config's IPsec credentials as the daemon loaded
    them (nsg.preflight.load_credentials). Raises ComposeError naming what could not be built."""
    from nsg.app_supervisor import specs
    from nsg.vms import vm_specs

    leases = leases or {}
    uplinks = tuple((u.name, u.interface) for u in cfg.uplinks)
    local = local_ip(cfg, leases)
    esp = cfg.transport == "esp"
    try:
        mtu = tenant_mtu(wan_mtu(cfg, leases)) if cfg.uplinks else DEFAULT_MTU
    except ValueError as exc:
        raise ComposeError("tenant MTU", str(exc)) from None
    apps, vms = specs(cfg, mtu), vm_specs(cfg, mtu)
    guests = frozenset({s.host_ifname for s in apps.values()} | {s.tap for s in vms.values()})
    view = evpn_view if cfg.evpn is not None else None
    whole = view is not None and view.devices is not None and view.devices <= _evpn_devices(cfg)
    try:
        if whole:
            none: frozenset = frozenset()
            desired = _with_entries(build_desired(cfg, leases, esp_tun=not kernel_esp, evpn_fdb=none,
                                                  evpn_neighbors=none, evpn_routes=none, guests=guests), view)
        else:
            desired = build_desired(cfg, leases, esp_tun=not kernel_esp, evpn_fdb=view.fdb if view else None,
                                    evpn_neighbors=view.neighbors if view else None,
                                    evpn_routes=view.routes if view else None, guests=guests)
    except ValueError as exc:
        raise ComposeError("dataplane", str(exc)) from None
    try:
        qos = QosPart(plan(cfg, dict(uplinks)) if cfg.qos is not None else None)
    except (ValueError, KeyError) as exc:
        raise ComposeError("qos", str(exc)) from None
    names = gather(_name_sources(cfg, leases))
    return DesiredState(
        dhcp=DhcpPart(tuple((u.name, u.interface) for u in cfg.uplinks if u.mode == "dhcp")),
        resolver=ResolverPart(names.nameservers, names.search),
        guard=guard_for(cfg),
        policy=PolicyPart((cfg.policy, cfg.subnets, cfg.apps, cfg.vms), uplinks,
                          cfg) if cfg.policy is not None else PolicyPart(),
        esp_engine=EspEnginePart(esp, cfg.ipsec if esp else None, kernel_esp and esp),
        dataplane=desired,
        port_guard=port_guard_for(cfg, [*(WorkloadPort(s.host_ifname, s.bridge, f"app {n}") for n, s in apps.items()),
                                        *(WorkloadPort(s.tap, s.bridge, f"vm {n}") for n, s in vms.items())]),
        ike=IkePart(esp, local, (cfg.system_ip, cfg.behind_nat, cfg.peers, cfg.ipsec),
                    credentials.epoch if credentials is not None else 0, cfg, credentials) if esp else IkePart(),
        qos=qos,
        evpn=EvpnPart(cfg, local, tuple(sorted((bridge_name(s.vni), s.vni) for s in cfg.subnets)))
        if cfg.evpn is not None else EvpnPart(),
        workloads=WorkloadsPart(mtu, apps, vms),
        upgrade=UpgradePart(cfg.upgrade),
        tenant_mtu=mtu,
        local_ip=local,
    )

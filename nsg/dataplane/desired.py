"""Gateway config (+ what the uplinks learned) -> the kernel objects nsg wants. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from ipsec.constants import esp_udp_tunnel_max_inner
from nsg.dataplane.mtu import tenant_mtu
from nsg.dataplane.types import ZERO_MAC, Addr, Desired, Fdb, LinkSpec, Neigh, PortFlags, Route, VxlanSpec
from nsg.model import GatewayConfig
from nsg.uplinks.lease import Lease

VXLAN_PORT = 4789  # RFC 7348 section 5 (IANA)
ESP_TUN = "nsg-esp"  # the userspace ESP engine's TUN device
UPLINK_METRIC_BASE = 100
UPLINK_METRIC_STEP = 10


def bridge_name(vni: int) -> str:
    return f"br-{vni}"


def vxlan_name(vni: int) -> str:
    return f"vx-{vni}"


def anycast_mac(vni: int) -> str:
    """The subnet gateway's MAC, the same at every site (a distributed anycast
    gateway): a host's ARP for its gateway gets one answer whichever site replies,
    and frames to it stop at the local bridge. Locally administered (02:...)."""
    return f"02:4e:53:{(vni >> 16) & 0xFF:02x}:{(vni >> 8) & 0xFF:02x}:{vni & 0xFF:02x}"


def build_desired(cfg: GatewayConfig, leases: Mapping[str, Lease] | None = None, esp_tun: bool = True,
                  evpn_fdb: frozenset[Fdb] | None = None, evpn_neighbors: frozenset[Neigh] | None = None,
                  evpn_routes: frozenset[Route] | None = None, guests: frozenset[str] = frozenset()) -> Desired:
    """``esp_tun``: with transport "esp", route peers into the userspace engine's TUN; False for
    the kernel XFRM backend, whose policies encrypt what goes out through the uplinks."""
    leases = leases or {}
    sysip = str(cfg.system_ip)
    addrs: set[Addr] = {Addr("lo", f"{sysip}/32")}
    routes: set[Route] = set()
    up = {"lo"}
    wan_mtus = []
    gateways: list[tuple[str, str]] = []  # (interface, next hop), in uplink priority order
    for i, u in enumerate(cfg.uplinks):
        up.add(u.interface)
        metric = UPLINK_METRIC_BASE + UPLINK_METRIC_STEP * i
        if u.mode == "static":
            address, gateway, mtu = u.address, u.gateway, u.mtu
        else:
            lease = leases.get(u.name)
            if lease is None:
                wan_mtus.append(u.mtu)
                continue
            address, gateway = lease.address, lease.gateway
            mtu = min(u.mtu, lease.mtu) if lease.mtu else u.mtu
        wan_mtus.append(mtu)
        assert address is not None
        addrs.add(Addr(u.interface, str(address)))
        if gateway is not None:
            routes.add(Route("0.0.0.0/0", u.interface, str(gateway), None, metric))
            gateways.append((u.interface, str(gateway)))

    mtu = tenant_mtu(min(wan_mtus))
    links: list[LinkSpec] = []
    ports: dict[str, str] = {}
    fdb: set[Fdb] = set()
    for s in cfg.subnets:
        br, vx = bridge_name(s.vni), vxlan_name(s.vni)
        links.append(LinkSpec(br, "bridge", mtu, mac=anycast_mac(s.vni)))
        # With EVPN the VXLAN port learns nothing (remote MACs come from BGP) and suppresses ARP
        # for the hosts whose MAC+IP routes we hold (the bridge answers from its neighbour table).
        flags = PortFlags(learning=False, neigh_suppress=True) if cfg.evpn is not None else None
        links.append(LinkSpec(vx, "vxlan", mtu, master=br, vxlan=VxlanSpec(s.vni, sysip, VXLAN_PORT),
                              port_flags=flags))
        addrs.add(Addr(br, f"{s.gateway}/{s.cidr.prefixlen}"))
        for p in s.ports:
            ports[p] = br
        if cfg.evpn is None:
            # Head-end replication: BUM and unknown unicast go to every peer
            # (the all-zero MAC is the kernel's default destination list).
            for peer in cfg.peers:
                fdb.add(Fdb(vx, ZERO_MAC, str(peer.system_ip)))
    if cfg.evpn is not None and evpn_fdb is not None:
        # EVPN: flood lists from type-3 routes, MAC entries from type-2 routes (the RIB decides)
        vx_names = {vxlan_name(s.vni) for s in cfg.subnets}
        fdb |= {f for f in evpn_fdb if f.ifname in vx_names}
    neighbors: set[Neigh] = set()
    if cfg.evpn is not None and evpn_neighbors is not None:
        br_names = {bridge_name(s.vni) for s in cfg.subnets}
        neighbors = {n for n in evpn_neighbors if n.ifname in br_names}
    if cfg.evpn is not None and evpn_routes is not None:
        # type-5 prefixes, via a gateway IP on a subnet's bridge
        routes |= {r for r in evpn_routes if r.ifname in {bridge_name(s.vni) for s in cfg.subnets}}

    mtus: dict[str, int] = {}
    if cfg.transport == "esp" and esp_tun:
        # Peer system IPs lead into the ESP engine; it sends ESP-in-UDP over the uplinks.
        up.add(ESP_TUN)
        mtus[ESP_TUN] = esp_udp_tunnel_max_inner(min(wan_mtus))
        for peer in cfg.peers:
            routes.add(Route(f"{peer.system_ip}/32", ESP_TUN, None, sysip, 0))
    else:
        # transport "plain" (or ESP in the kernel): the peer's system IP is reached through the
        # uplink next hops, sourced from our own system IP (XFRM policies match these packets).
        for peer in cfg.peers:
            for i, (ifname, gw) in enumerate(gateways):
                routes.add(Route(f"{peer.system_ip}/32", ifname, gw, sysip, i))

    return Desired(
        links=tuple(links),
        ports=ports,
        up=frozenset(up),
        mtus=mtus,
        addrs=frozenset(addrs),
        fdb=frozenset(fdb),
        routes=frozenset(routes),
        neighbors=frozenset(neighbors),
        guests=guests,
    )

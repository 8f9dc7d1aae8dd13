"""Two gateways with their EVPN control plane behind a real FRR bgpd acting as the route reflector.

FRR has no VTEP and no ``advertise-all-vni``: it only reflects what the gateways announce
(``route-reflector-client`` under ``address-family l2vpn evpn``). Its namespace is also the router
between the gateways' uplinks and holds the routes to both system IPs (the VTEP addresses), so the
reflected routes' next hops resolve there::

    host A -- gw A (198.18.71.2) -- FRR (198.18.71.1 | 198.18.72.1) -- (198.18.72.2) gw B -- host B

Each gateway's type-3 route reaches the other one through the reflector and becomes its flood list,
a host frame on a LAN port becomes a type-2 route, and host A pings host B over VXLAN.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from tests.conftest import sh, unique_name
from tests.interop import frr as frr_mod
from tests.interop.frr import Frr, Neighbor
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("network namespaces"),
    require_peer(frr_mod.missing()),
]

ASN, VNI = 65000, 100
ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class Site:
    name: str
    ns: str  # the gateway's namespace
    host_ns: str  # the LAN host's namespace
    system_ip: str
    wan: str  # the gateway's uplink address (nsg sets it)
    rr: str  # FRR's address on the same link (the uplink's next hop, the BGP peer)
    host_ip: str


def _config(site: Site, other: Site) -> dict:
    return {
        "schema_version": 1,
        "system_ip": site.system_ip,
        "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": f"{site.wan}/24",
                     "gateway": site.rr}],
        "subnets": [{"name": "corp", "vni": VNI, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                     "ports": ["lan0"]}],
        # transport "plain": nsg routes the other gateway's system IP via the uplink next hop (FRR)
        "peers": [{"name": other.name, "system_ip": other.system_ip, "endpoint": other.wan}],
        "evpn": {"asn": ASN, "peers": [{"address": site.rr, "asn": ASN}], "hold_time": 9},
    }


def _host_mac(host_ns: str) -> str:
    links = json.loads(sh("ip", "-n", host_ns, "-j", "link", "show", "dev", "eth0"))
    return links[0]["address"].lower()


def _diagnose(site: Site, gw: NsgProcess) -> str:
    """What the gateway knows (status, kernel bridge FDB, log tail): for a failed type-2 wait."""
    fdb = sh("ip", "netns", "exec", site.ns, "bridge", "fdb", "show", check=False)
    return (f"--- {site.name} status: {json.dumps(gw.status())}\n--- {site.name} bridge fdb:\n{fdb}"
            f"--- {site.name} log:\n{gw.log.read_text(errors='replace')[-3000:]}")


def _has_nexthop(route: dict, ip: str) -> bool:
    return any(h.get("ip") == ip for h in route.get("nexthops", []))


def test_two_gateways_via_frr_route_reflector(tmp_path: Path) -> None:
    rr_ns = unique_name("rr")
    a = Site("gwa", unique_name("ga"), unique_name("ha"), "198.19.255.1", "198.18.71.2", "198.18.71.1",
             "198.19.0.60")
    b = Site("gwb", unique_name("gb"), unique_name("hb"), "198.19.255.2", "198.18.72.2", "198.18.72.1",
             "198.19.0.70")
    sites = (a, b)
    made: list[str] = []
    procs: list[NsgProcess] = []
    try:
        for ns in (rr_ns, a.ns, a.host_ns, b.ns, b.host_ns):
            netns.add_namespace(ns)
            made.append(ns)
        netns.sysctl(rr_ns, "net.ipv4.ip_forward", "1")
        for i, s in enumerate(sites):
            # underlay: FRR's namespace routes between the two uplinks and knows both VTEPs
            netns.add_veth(rr_ns, f"to-{s.name}", s.ns, "wan0", alias=f"{rr_ns}-{s.name}")
            netns.add_address(rr_ns, f"to-{s.name}", f"{s.rr}/24")
            netns.add_route(rr_ns, f"{s.system_ip}/32", s.wan)
            # the LAN host
            sh("ip", "link", "add", "name", "lan0", "netns", s.ns, "type", "veth", "peer", "name", "eth0", "netns",
               s.host_ns)
            sh("ip", "-n", s.host_ns, "addr", "add", f"{s.host_ip}/24", "dev", "eth0")
            sh("ip", "-n", s.host_ns, "link", "set", "eth0", "mtu", "1388", "up")
            (tmp_path / f"{s.name}.json").write_text(json.dumps(_config(s, sites[1 - i])))

        frr = Frr(rr_ns, tmp_path / "frr", a.rr, ASN, [Neighbor(s.wan, ASN, rr_client=True) for s in sites],
                  name="rr", advertise_all_vni=False)
        with frr:
            for s in sites:
                procs.append(NsgProcess(s.ns, tmp_path / f"{s.name}.json", tmp_path / f"{s.name}-state"))
            gw = dict(zip(sites, procs, strict=True))

            # 1. both sessions up at the reflector
            for s in sites:
                frr.wait_established(s.wan, timeout=30)

            # 2a. both gateways' type-3 routes at the reflector, next hop = the gateway's system IP
            for s in sites:
                frr.wait_route(lambda r, s=s: r.get("routeType") == 3 and _has_nexthop(r, s.system_ip),
                               what=f"{s.name}'s type-3 route in FRR")

            # 3a. each gateway: session Established, the other's VTEP in its flood list (from the reflected type-3)
            for s, other in ((a, b), (b, a)):
                flood = f"vx-{VNI} {ZERO_MAC} dst {other.system_ip}"
                st = gw[s].wait(lambda st, flood=flood: flood in st["fdb"], what=f"{flood} on {s.name}")
                assert st["evpn"]["peers"][s.rr]["state"] == "Established"

            # 4. host A pings host B across the reflector-built VXLAN overlay
            deadline = time.monotonic() + 20
            while True:
                r = sh("ip", "netns", "exec", a.host_ns, "ping", "-c", "1", "-W", "1", b.host_ip, check=False)
                if "1 received" in r:
                    break
                assert time.monotonic() < deadline, "no ping from host A to host B across EVPN/VXLAN"

            # 2b. the hosts have sent frames: each gateway announces its host's MAC (type-2), FRR reflects it
            macs = {s: _host_mac(s.host_ns) for s in sites}
            for s in sites:
                try:
                    frr.wait_route(lambda r, s=s: r.get("routeType") == 2 and r.get("mac", "").lower() == macs[s]
                                   and _has_nexthop(r, s.system_ip), timeout=10,
                                   what=f"{s.name}'s type-2 route for {macs[s]} in FRR")
                except frr_mod.FrrError as exc:
                    raise AssertionError(f"{exc}\n{_diagnose(s, gw[s])}") from None

            # 3b. ... and the other gateway has that MAC toward the announcing system IP
            for s, other in ((a, b), (b, a)):
                entry = f"vx-{VNI} {macs[other]} dst {other.system_ip}"
                st = gw[s].wait(lambda st, entry=entry: entry in st["fdb"], timeout=10,
                                what=f"{entry} on {s.name}")
                print(f"{s.name} FDB:", st["fdb"], "EVPN:", st["evpn"])

            # 5. `nsg show evpn` on each gateway lists the other's type-2 and type-3 routes, as FRR
            #    reflected them (received from the reflector's address)
            for s, other in ((a, b), (b, a)):
                shown = json.loads(sh("ip", "netns", "exec", s.ns, *NsgProcess.cli_argv(), "show", "evpn", "--json",
                                      "--state-dir", str(tmp_path / f"{s.name}-state")))
                got = {(r["type"], r.get("mac"), r["vtep"], r["peer"]) for r in shown["received"]}
                assert {(3, None, other.system_ip, s.rr), (2, macs[other], other.system_ip, s.rr)} <= got, shown
    finally:
        for p in procs:
            p.stop()
        for ns in made:
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)

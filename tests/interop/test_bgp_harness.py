"""The BGP EVPN harnesses themselves: real FRR (zebra + bgpd) and real GoBGP in two namespaces talk EVPN.

Ground truth for later nsg interop tests: the iBGP session (AS 65000, timers 3/9) comes up, a MAC+IP
route injected into GoBGP lands in FRR's ``show bgp l2vpn evpn json`` (and zebra installs the MAC as
remote), and the type-3 route FRR originates for its kernel VTEP (``advertise-all-vni``) reaches GoBGP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import frr as frr_mod
from tests.interop import gobgp as gobgp_mod
from tests.interop.frr import BgpNet, Frr, Neighbor, bgp_pair, make_vtep
from tests.interop.gobgp import GoBgp, GoNeighbor
from tests.peers import require_peer, require_root

pytestmark = [
    pytest.mark.root,
    require_root("network namespaces"),
    require_peer(frr_mod.missing()),
    require_peer(gobgp_mod.missing()),
]

ASN, VNI = 65000, 100
MAC, HOST_IP = "02:00:5e:00:53:01", "198.51.100.101"


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[tuple[BgpNet, Frr, GoBgp]]:
    with bgp_pair() as net:
        make_vtep(net.ns[0], net.addr[0], vni=VNI, bridge_address="198.51.100.1/24")
        frr = Frr(net.ns[0], tmp_path / "frr", net.addr[0], ASN, [Neighbor(net.addr[1], ASN)])
        gobgp = GoBgp(net.ns[1], tmp_path / "gobgp", net.addr[1], ASN, [GoNeighbor(net.addr[0], ASN)])
        with frr, gobgp:
            frr.wait_established(net.addr[1])
            gobgp.wait_established(net.addr[0])
            yield net, frr, gobgp
        # after the with: both stopped by pid
        assert not frr.pids and gobgp.proc is None


def test_session_established(stage):
    net, frr, gobgp = stage
    peers = frr.summary()["l2VpnEvpn"]["peers"]
    assert peers[net.addr[1]]["state"] == "Established"
    assert gobgp.neighbor_state(net.addr[0]) in ("established", "6")


def test_gobgp_mac_ip_route_reaches_frr(stage):
    net, frr, gobgp = stage
    rd = f"{net.addr[1]}:{VNI}"
    gobgp.add_macadv(MAC, HOST_IP, rd=rd, rt=f"{ASN}:{VNI}", label=VNI, nexthop=net.addr[1])
    route = frr.wait_route(lambda r: r.get("routeType") == 2 and r.get("mac") == MAC and r.get("ip") == HOST_IP,
                           what="GoBGP's MAC+IP route in FRR")
    assert route["rd"] == rd
    assert route["nexthops"][0]["ip"] == net.addr[1]
    assert f"RT:{ASN}:{VNI}" in route["extendedCommunity"]["string"]
    assert route["valid"] is True
    # zebra imported it into VNI 100 as a remote MAC behind GoBGP's VTEP
    mac = frr.wait_for(lambda f: f.evpn_macs().get(str(VNI), {}).get("macs", {}).get(MAC), what="remote MAC")
    assert mac["type"] == "remote" and mac["remoteVtep"] == net.addr[1]
    # and a withdrawal removes it again
    gobgp.del_macadv(MAC, HOST_IP, rd=rd, label=VNI)
    frr.wait_for(lambda f: not any(r.get("mac") == MAC for r in f.evpn_routes()), what="withdrawal in FRR")


def test_frr_type3_reaches_gobgp(stage):
    net, frr, gobgp = stage
    vnis = frr.wait_for(lambda f: f.evpn_vnis().get(str(VNI)), what="bgpd learning VNI 100 from zebra")
    assert vnis["vni"] == VNI
    path = gobgp.wait_route(lambda p: p["nlri"]["type"] == 3 and p["nlri"]["value"].get("ip") == net.addr[0],
                            what="FRR's type-3 route in GoBGP")
    attrs = {a["type"]: a for a in path["attrs"]}
    assert attrs[14]["nexthop"] == net.addr[0]
    pmsi = attrs[22]
    assert pmsi["tunnel-type"] == 6  # ingress replication
    assert pmsi["label"] == VNI and pmsi["tunnel-id"] == net.addr[0]
    assert {"type": 3, "subtype": 12, "tunnel_type": 8} in attrs[16]["value"]  # encapsulation: VXLAN
    assert {"type": 0, "subtype": 2, "value": f"{ASN}:{VNI}"} in attrs[16]["value"]

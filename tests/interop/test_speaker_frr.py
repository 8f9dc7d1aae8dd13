"""Our BGP speaker against real FRR (bgpd + zebra, advertise-all-vni): the EVPN session comes up,
FRR's type-3 route for its VTEP reaches us with its PMSI tunnel, and our type-2 MAC+IP and type-3
routes land in FRR's `show bgp l2vpn evpn`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

from tests.interop import frr as frr_mod
from tests.interop.frr import Frr, Neighbor, bgp_pair, make_vtep
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("network namespaces"),
    require_peer(frr_mod.missing()),
]

ASN, VNI = 65000, 100
MAC, IP = "02:00:5e:00:53:77", "198.51.100.77"


def test_nsg_speaker_with_frr(tmp_path):
    with bgp_pair() as net:
        make_vtep(net.ns[1], net.addr[1], vni=VNI, bridge_address="198.51.100.1/24")
        frr = Frr(net.ns[1], tmp_path / "frr", net.addr[1], ASN, [Neighbor(net.addr[0], ASN)])
        with frr:
            proc = subprocess.Popen(["ip", "netns", "exec", net.ns[0], sys.executable, "-m",
                                     "tests.netns.helpers.speaker_run", net.addr[0], net.addr[1], str(ASN), MAC, IP,
                                     str(VNI)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            events: list[dict] = []
            reader = threading.Thread(target=lambda: [events.append(json.loads(line)) for line in proc.stdout
                                                      if line.startswith("{")], daemon=True)
            reader.start()
            try:
                frr.wait_established(net.addr[0], timeout=30)
                ours = frr.wait_route(lambda r: r.get("routeType") == 2 and r.get("mac") == MAC
                                      and r.get("ip") == IP, what="our MAC+IP route in FRR")
                assert ours["nexthops"][0]["ip"] == net.addr[0]
                frr.wait_route(lambda r: (r.get("routeType") == 3 and net.addr[0] in str(r.get("prefix", ""))) or
                               (r.get("routeType") == 3 and r.get("originatorIp") == net.addr[0]),
                               what="our type-3 route in FRR")
                deadline = time.monotonic() + 20
                theirs = None
                while time.monotonic() < deadline and theirs is None:
                    theirs = next((r for e in list(events) for r in e.get("update", [])
                                   if r["type"] == 3 and r["originator"] == net.addr[1]), None)
                    time.sleep(0.1)
                assert theirs is not None, events
                assert theirs["pmsi_vni"] == VNI
                assert {"state": "up"} in events
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)

"""Real BGP messages between FRR 8.4 and GoBGP 3.10 (tests/golden/bgp, judged by tshark) through our
codec: every message decodes, re-encodes to the same bytes, and says what tshark says."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bgp.codec import Keepalive, Notification, Open, UpdateResult, decode
from bgp.constants import AttrType
from bgp.evpn_nlri import (
    Encapsulation,
    InclusiveMulticastRoute,
    MacIpRoute,
    RouteDistinguisher,
    RouteTarget,
)

GOLDEN = json.loads((Path(__file__).parents[2] / "golden" / "bgp" / "frr_gobgp.json").read_text())
MESSAGES = GOLDEN["messages"]


def rd_text(rd: RouteDistinguisher) -> str:
    raw = rd.encode()
    if raw[:2] == b"\x00\x01":
        return f"{IPv4Address(raw[2:6])}:{int.from_bytes(raw[6:8], 'big')}"
    return raw.hex()


@pytest.mark.parametrize("i", range(len(MESSAGES)), ids=[f"{m['sender']}-{m['type_name']}" for m in MESSAGES])
def test_decodes_like_tshark_and_reencodes_exactly(i):
    m = MESSAGES[i]
    raw, exp = bytes.fromhex(m["hex"]), m["expect"]
    msg = decode(raw)
    if m["type_name"] == "OPEN":
        assert isinstance(msg, Open)
        assert (msg.version, msg.asn, msg.hold_time, str(msg.bgp_id)) == (
            exp["version"], exp["four_octet_as"], exp["hold_time"], exp["bgp_id"])
        assert {tuple(f) for f in exp["mp_afi_safi"]} <= set(msg.families)
        assert msg.encode() == raw
    elif m["type_name"] == "KEEPALIVE":
        assert isinstance(msg, Keepalive) and msg.encode() == raw
    elif m["type_name"] == "NOTIFICATION":
        assert isinstance(msg, Notification) and (msg.code, msg.subcode) == (exp["major"], exp["minor"])
        assert msg.encode() == raw
    else:
        assert isinstance(msg, UpdateResult) and msg.error is None, msg.error
        upd = msg.update
        assert upd.encode() == raw
        reach, unreach = upd.mp_reach, upd.mp_unreach
        routes = (reach.nlri if reach else ()) + (unreach.nlri if unreach else ())
        assert len(routes) == len(exp["routes"])
        for ours, theirs in zip(routes, exp["routes"], strict=True):
            assert rd_text(ours.rd) == theirs["rd"]
            if theirs["route_type"] == 2:
                assert isinstance(ours, MacIpRoute)
                assert ours.mac == theirs["mac"]
                assert (str(ours.ip) if ours.ip else None) == theirs["ip"]
                # tshark reads the 24-bit label as an MPLS label (VNI >> 4); the VNI is the whole field
                assert ours.vni == GOLDEN["vni"] and ours.vni >> 4 == theirs["label1_mpls"]
            else:
                assert isinstance(ours, InclusiveMulticastRoute) and str(ours.originator) == theirs["ip"]
            assert (unreach is not None and ours in unreach.nlri) == theirs["withdrawn"]
        if reach is not None:
            assert str(reach.next_hop) == exp["next_hop"]
            ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
            rts = [f"{c.admin}:{c.assigned}" for c in ext.communities if isinstance(c, RouteTarget)]
            assert rts == exp["route_targets"]
            assert [c.tunnel_type for c in ext.communities if isinstance(c, Encapsulation)] == [exp["encapsulation"]]
            if exp.get("pmsi"):
                pmsi = upd.get(AttrType.PMSI_TUNNEL).tunnel
                assert (pmsi.tunnel_type, pmsi.vni) == (exp["pmsi"]["tunnel_type"], exp["pmsi"]["vni"])

"""The session machine's stricter OPEN checks (a route reflector's): a minimum hold time, hold time 0
refused, the identifier the peer must present or must not; and a Cease with a chosen subcode."""

import pytest

from bgp import fsm
from bgp.constants import CeaseSubcode, ErrorCode, OpenSubcode
from bgp.fsm import PeerOpen, Session, State

BASE = {"local_asn": 65000, "local_id": "198.19.255.254", "peer_asn": 65000, "passive": True}


def opened(cfg: fsm.Config, hold: int = 9, bgp_id: str = "198.19.255.1"):
    s = Session(cfg)
    s.start()
    s.tcp_up()
    return s, s.open(PeerOpen(4, 65000, hold, bgp_id, frozenset({(25, 70)}), True))


@pytest.mark.parametrize(("options", "hold", "bgp_id", "refusal"), [
    ({}, 0, "198.19.255.1", None),  # RFC 4271 4.2: 0 is a legal hold time
    ({"allow_zero_hold": False}, 0, "198.19.255.1", OpenSubcode.UNACCEPTABLE_HOLD_TIME),
    ({"allow_zero_hold": False}, 3, "198.19.255.1", None),
    ({"min_hold_time": 5}, 4, "198.19.255.1", OpenSubcode.UNACCEPTABLE_HOLD_TIME),
    ({"min_hold_time": 5}, 5, "198.19.255.1", None),
    ({"min_hold_time": 5}, 0, "198.19.255.1", None),  # the minimum is for non-zero values
    ({"peer_id": "198.19.255.1"}, 9, "198.19.255.1", None),
    ({"peer_id": "198.19.255.1"}, 9, "198.19.255.2", OpenSubcode.BAD_BGP_IDENTIFIER),
    ({"refused_ids": frozenset({"198.19.255.2"})}, 9, "198.19.255.2", OpenSubcode.BAD_BGP_IDENTIFIER),
    ({"refused_ids": frozenset({"198.19.255.2"})}, 9, "198.19.255.1", None),
    ({}, 9, "198.19.255.254", OpenSubcode.BAD_BGP_IDENTIFIER),  # ours, as always
])
def test_open_options(options, hold, bgp_id, refusal):
    s, out = opened(fsm.Config(**BASE, **options), hold, bgp_id)
    if refusal is None:
        assert s.state is State.OPEN_CONFIRM and s.last_sent is None
        return
    assert out[0] == fsm.SendNotification(ErrorCode.OPEN_MESSAGE, refusal) == s.last_sent
    assert s.state is State.IDLE
    down = next(c for c in out if isinstance(c, fsm.Down))
    assert down.fault == "remote" and (str(hold) in down.reason or bgp_id in down.reason)


def test_stop_with_a_cease_subcode_and_data():
    s, _ = opened(fsm.Config(**BASE))
    s.keepalive()
    data = b"\x00\x19\x46\x00\x00\x27\x10"  # RFC 4486: AFI, SAFI, the prefix limit
    out = s.stop(CeaseSubcode.MAX_PREFIXES, data, reason="over its limit")
    assert out[0] == fsm.SendNotification(ErrorCode.CEASE, CeaseSubcode.MAX_PREFIXES, data) == s.last_sent
    assert fsm.Down("over its limit", "none") in out

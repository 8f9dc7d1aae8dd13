"""BGP message codec: golden bytes written by hand from the RFC layouts, round
trips, and every RFC 7606 classification the UPDATE decoder makes."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgp.attributes import (
    AsPath,
    AsSegment,
    AtomicAggregate,
    ClusterList,
    Communities,
    ExtCommunities,
    Ipv4Prefix,
    LocalPref,
    Med,
    MpReachNlri,
    MpUnreachNlri,
    NextHop,
    OriginatorId,
    OriginAttr,
    PmsiTunnelAttr,
    RawNlri,
    UnknownAttribute,
)
from bgp.capabilities import GracefulRestartCap, GrFamily, MultiprotocolCap, RouteRefreshCap, UnknownCapability
from bgp.codec import (
    Keepalive,
    Notification,
    Open,
    RouteRefresh,
    Update,
    UpdateResult,
    decode,
    next_frame,
)
from bgp.constants import (
    AS_TRANS,
    AsSegmentType,
    AttrFlag,
    CeaseSubcode,
    ErrorAction,
    ErrorCode,
    HeaderSubcode,
    OpenSubcode,
    RouteRefreshSubcode,
    UpdateSubcode,
)
from bgp.errors import LocalBgpError, RemoteBgpError
from bgp.evpn_nlri import (
    RouteDistinguisher,
    encap_vxlan,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)

M = b"\xff" * 16
SYS_IP = "192.0.2.1"
RD = RouteDistinguisher.ipv4(SYS_IP, 1)
RD_HEX = "0001 c0000201 0001"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def frame(msg_type: int, body: bytes) -> bytes:
    return M + (19 + len(body)).to_bytes(2, "big") + bytes((msg_type,)) + body


# --- golden messages ---------------------------------------------------------------------
OPEN_GOLDEN = h(
    "ffffffffffffffffffffffffffffffff 0043 01"
    "04 fde8 005a c0000201 26"  # version 4, AS 65000, hold 90, id 192.0.2.1, 38 octets of params
    "02 06  01 04 0019 00 46"  # param 2: multiprotocol L2VPN/EVPN
    "02 06  01 04 0001 00 01"  # multiprotocol IPv4/unicast
    "02 02  02 00"  # route refresh
    "02 08  40 06 0078 0019 46 80"  # graceful restart: time 120, L2VPN/EVPN forwarding preserved
    "02 06  41 04 0000fde8"  # 4-octet AS 65000
)


def golden_open() -> Open:
    gr = GracefulRestartCap(120, 0, (GrFamily(25, 70, 0x80),))
    return Open.build(65000, SYS_IP, hold_time=90, families=((25, 70), (1, 1)), graceful_restart=gr)


def test_open_golden() -> None:
    assert golden_open().encode() == OPEN_GOLDEN
    msg = decode(OPEN_GOLDEN)
    assert msg == golden_open()
    assert isinstance(msg, Open)
    assert msg.asn == 65000 and msg.families == ((25, 70), (1, 1))
    assert msg.bgp_id == IPv4Address(SYS_IP)
    gr = msg.capability(64)
    assert isinstance(gr, GracefulRestartCap) and gr.restart_time == 120 and gr.families[0].flags == 0x80


def test_open_four_octet_as_uses_as_trans() -> None:
    msg = Open.build(4_200_000_000, SYS_IP)
    wire = msg.encode()
    assert wire[20:22] == AS_TRANS.to_bytes(2, "big")
    back = decode(wire)
    assert back == msg and isinstance(back, Open) and back.asn == 4_200_000_000


def test_open_several_capabilities_in_one_parameter_round_trip() -> None:
    caps = (MultiprotocolCap(25, 70), RouteRefreshCap(), UnknownCapability(128, b""), UnknownCapability(73, b"ab"))
    msg = Open(65001, 0, IPv4Address("198.51.100.7"), (caps,))
    wire = msg.encode()
    assert wire[28] == 2 + 6 + 2 + 2 + 4  # one parameter holding all four
    assert decode(wire) == msg


@pytest.mark.parametrize(
    ("code", "value"),
    [(1, h("0019 46")), (65, h("0000fd")), (2, b"x"), (64, h("0078 0019 46"))],
)
def test_malformed_known_capability_is_kept_as_unknown(code: int, value: bytes) -> None:
    msg = Open(65001, 90, IPv4Address("198.51.100.7"), ((UnknownCapability(code, value),),))
    back = decode(msg.encode())
    assert isinstance(back, Open) and back.capabilities == (UnknownCapability(code, value),)


def test_multiprotocol_reserved_octet_is_ignored_but_kept() -> None:
    msg = Open(65001, 90, IPv4Address("198.51.100.7"), ((MultiprotocolCap(25, 70, reserved=7),),))
    back = decode(msg.encode())
    assert isinstance(back, Open) and back.families == ((25, 70),) and back == msg


def test_keepalive_and_notification_golden() -> None:
    assert Keepalive().encode() == h("ffffffffffffffffffffffffffffffff 0013 04")
    assert decode(Keepalive().encode()) == Keepalive()
    note = Notification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, b"bye")
    wire = h("ffffffffffffffffffffffffffffffff 0018 03 06 02") + b"bye"
    assert note.encode() == wire and decode(wire) == note


def test_route_refresh_golden() -> None:
    wire = h("ffffffffffffffffffffffffffffffff 0017 05 0019 00 46")
    assert RouteRefresh(25, 70).encode() == wire and decode(wire) == RouteRefresh(25, 70)


def test_notification_from_error() -> None:
    err = RemoteBgpError("x", code=3, subcode=5, data=b"\x40\x01")
    assert Notification.from_error(err) == Notification(3, 5, b"\x40\x01")


UPDATE_GOLDEN = h(
    "ffffffffffffffffffffffffffffffff 008a 02"
    "0000"  # no withdrawn routes
    "0073"  # 115 octets of path attributes
    # MP_REACH_NLRI: optional, 67 octets: AFI 25, SAFI 70, next hop 4 octets, reserved
    "80 0e 43  0019 46 04 c0000201 00"
    # type 2, 37 octets: RD, ESI 0, tag 0, MAC /48, IPv4 /32, label = VNI 100
    "02 25" + RD_HEX + "00000000000000000000 00000000 30 aabbccddee01 20 0a000005 000064"
    # type 3, 17 octets: RD, tag 0, originator /32
    "03 11" + RD_HEX + "00000000 20 c0000201"
    "40 01 01 00"  # ORIGIN IGP
    "40 02 00"  # AS_PATH empty (iBGP)
    "40 05 04 00000064"  # LOCAL_PREF 100
    "c0 10 10  0002 fde8 00000064  030c 00000000 0008"  # RT 65000:100, encapsulation VXLAN
    "c0 16 09  00 06 000064 c0000201"  # PMSI: ingress replication, VNI 100, VTEP 192.0.2.1
)


def golden_update() -> Update:
    imet, pmsi = inclusive_multicast_route(RD, 100, SYS_IP)
    mac = mac_ip_route(RD, "AA:BB:CC:DD:EE:01", "10.0.0.5", 100)
    return Update.for_evpn([mac, imet], SYS_IP, [route_target(65000, 100), encap_vxlan()], pmsi)


def test_update_golden() -> None:
    assert golden_update().encode() == UPDATE_GOLDEN
    result = decode(UPDATE_GOLDEN)
    assert isinstance(result, UpdateResult)
    assert result.action == ErrorAction.NONE and result.error is None
    assert result.update == golden_update()
    reach = result.update.mp_reach
    assert reach is not None and reach.next_hop == IPv4Address(SYS_IP)
    assert reach.nlri[0].vni == 100 and reach.nlri[0].mac == "aa:bb:cc:dd:ee:01"


def test_withdraw_evpn_round_trip() -> None:
    upd = Update.withdraw_evpn([mac_ip_route(RD, "02:00:00:00:00:01", None, 100)])
    result = decode(upd.encode())
    assert isinstance(result, UpdateResult) and result.update == upd
    assert result.update.mp_unreach is not None and result.update.mp_reach is None


def every_attribute_update() -> Update:
    return Update(
        withdrawn=(Ipv4Prefix.of("203.0.113.0/24"), Ipv4Prefix(0, b"")),
        attributes=(
            MpUnreachNlri(1, 1, (Ipv4Prefix.of("198.51.100.0/25"),)),
            OriginAttr(2),
            AsPath((AsSegment(AsSegmentType.AS_SEQUENCE, (65000, 4_200_000_000)),
                    AsSegment(AsSegmentType.AS_SET, (1, 2, 3)))),
            NextHop(IPv4Address("192.0.2.9")),
            Med(7),
            LocalPref(200),
            AtomicAggregate(),
            Communities((0xFFFFFF01,)),
            OriginatorId(IPv4Address("192.0.2.2")),
            ClusterList((IPv4Address("192.0.2.3"), IPv4Address("192.0.2.4"))),
            ExtCommunities((route_target(4_200_000_000, 5),)),
            UnknownAttribute(99, b"opaque", raw_flags=0xE0),
            UnknownAttribute(100, bytes(300), raw_flags=0xD0),
        ),
        nlri=(Ipv4Prefix.of("10.1.0.0/16"), Ipv4Prefix(9, b"\x0a\xff")),  # trailing bits kept
    )


def test_every_attribute_round_trips() -> None:
    upd = every_attribute_update()
    result = decode(upd.encode())
    assert isinstance(result, UpdateResult) and result.action == ErrorAction.NONE
    assert result.update == upd
    assert result.update.encode() == upd.encode()
    assert Ipv4Prefix(9, b"\x0a\xff").network.with_prefixlen == "10.128.0.0/9"


def test_two_octet_as_path() -> None:
    upd = Update(attributes=(AsPath.sequence(65000, 65001),))
    wire = upd.encode(asn4=False)
    assert h("40 02 06 02 02 fde8 fde9") in wire
    result = decode(wire, asn4=False)
    assert isinstance(result, UpdateResult) and result.update == upd
    with pytest.raises(LocalBgpError):
        Update(attributes=(AsPath.sequence(70000),)).encode(asn4=False)


def test_extended_length_on_a_short_known_attribute_round_trips() -> None:
    wire = frame(2, h("0000 0005 50 01 0001 00"))  # ORIGIN sent with Extended Length
    result = decode(wire)
    assert isinstance(result, UpdateResult) and result.action == ErrorAction.NONE
    assert result.update is not None and result.update.attributes == (OriginAttr(0, flags=0x50),)
    assert result.update.encode() == wire


def test_propagation_sets_partial_and_drops_non_transitive_unknowns() -> None:
    upd = Update(attributes=(OriginAttr(0), UnknownAttribute(99, b"x", raw_flags=0xC0),
                             UnknownAttribute(98, b"y", raw_flags=0x80)))
    assert upd.propagated().attributes == (OriginAttr(0), UnknownAttribute(99, b"x", raw_flags=0xE0))


# --- header and OPEN errors --------------------------------------------------------------
@pytest.mark.parametrize(
    ("wire", "code", "subcode", "data"),
    [
        (b"\xfe" + M[1:] + h("0013 04"), 1, HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, b""),
        (M + h("0012 04"), 1, HeaderSubcode.BAD_MESSAGE_LENGTH, h("0012")),
        (M + h("0014 04 00"), 1, HeaderSubcode.BAD_MESSAGE_LENGTH, h("0014")),
        (M + h("1001 02") + bytes(4078), 1, HeaderSubcode.BAD_MESSAGE_LENGTH, h("1001")),
        (M + h("0013 09"), 1, HeaderSubcode.BAD_MESSAGE_TYPE, h("09")),
        (M + h("0018 05 0019 00 46 00"), 7, RouteRefreshSubcode.INVALID_MESSAGE_LENGTH, M + h("0018 05 0019 00 46 00")),
        (M + h("0014 04"), 1, HeaderSubcode.BAD_MESSAGE_LENGTH, h("0014")),  # header longer than data
        (frame(1, h("03 fde8 005a c0000201 00")), 2, OpenSubcode.UNSUPPORTED_VERSION_NUMBER, h("0004")),
        (frame(1, h("04 fde8 0002 c0000201 00")), 2, OpenSubcode.UNACCEPTABLE_HOLD_TIME, b""),
        (frame(1, h("04 fde8 005a 00000000 00")), 2, OpenSubcode.BAD_BGP_IDENTIFIER, b""),
        (frame(1, h("04 fde8 005a c0000201 03 01 01 00")), 2, OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, b""),
        (frame(1, h("04 fde8 005a c0000201 03 02 05 00")), 2, OpenSubcode.UNSPECIFIC, b""),
        (frame(1, h("04 fde8 005a c0000201 00 00")), 2, OpenSubcode.UNSPECIFIC, b""),
    ],
)
def test_message_errors(wire: bytes, code: int, subcode: int, data: bytes) -> None:
    with pytest.raises(RemoteBgpError) as info:
        decode(wire)
    assert (info.value.code, info.value.subcode, info.value.data) == (code, subcode, data)
    assert info.value.fault == "remote"


def test_next_frame_splits_a_stream() -> None:
    stream = Keepalive().encode() + OPEN_GOLDEN[:30]
    first, rest = next_frame(stream)
    assert first == Keepalive().encode() and rest == OPEN_GOLDEN[:30]
    assert next_frame(rest) == (None, rest)
    assert next_frame(rest + OPEN_GOLDEN[30:]) == (OPEN_GOLDEN, b"")
    assert next_frame(b"\xff" * 5) == (None, b"\xff" * 5)
    with pytest.raises(RemoteBgpError):
        next_frame(b"\x00" * 19)


def test_local_errors() -> None:
    with pytest.raises(LocalBgpError):
        Open(65000, 2, IPv4Address(SYS_IP)).encode()
    with pytest.raises(LocalBgpError):
        Update(attributes=(UnknownAttribute(99, bytes(5000), raw_flags=0xD0),)).encode()
    with pytest.raises(LocalBgpError):
        UnknownAttribute(99, bytes(300), raw_flags=0xC0).encode()  # needs Extended Length
    with pytest.raises(LocalBgpError):
        Ipv4Prefix(33, bytes(5))
    with pytest.raises(LocalBgpError) as info:
        Med(1 << 32).encode()
    assert info.value.fault == "local"


# --- RFC 7606 ----------------------------------------------------------------------------
def attr(flags: int, type_code: int, value: bytes) -> bytes:
    if flags & AttrFlag.EXTENDED_LENGTH:
        return bytes((flags, type_code)) + len(value).to_bytes(2, "big") + value
    return bytes((flags, type_code, len(value))) + value


ORIGIN = attr(0x40, 1, b"\x00")
AS_PATH = attr(0x40, 2, h("02 01 0000fde8"))
NEXT_HOP = attr(0x40, 3, h("c0000209"))
NLRI = h("18 0a0100")  # 10.1.0.0/24
MP_REACH = attr(0x80, 14, h("0019 46 04 c0000201 00 03 11") + h(RD_HEX) + h("00000000 20 c0000201"))


def update_wire(attrs: bytes, nlri: bytes = b"", withdrawn: bytes = b"") -> bytes:
    body = len(withdrawn).to_bytes(2, "big") + withdrawn + len(attrs).to_bytes(2, "big") + attrs + nlri
    return frame(2, body)


def classify(wire: bytes) -> UpdateResult:
    result = decode(wire)
    assert isinstance(result, UpdateResult)
    if result.action != ErrorAction.NONE:
        assert isinstance(result.error, RemoteBgpError) and result.error.code == ErrorCode.UPDATE_MESSAGE
    return result


def test_clean_ipv4_update() -> None:
    result = classify(update_wire(ORIGIN + AS_PATH + NEXT_HOP, NLRI))
    assert result.action == ErrorAction.NONE and result.update is not None
    assert result.update.nlri == (Ipv4Prefix.of("10.1.0.0/24"),)


TAW = ErrorAction.TREAT_AS_WITHDRAW


@pytest.mark.parametrize(
    ("attrs", "subcode"),
    [
        (attr(0x40, 1, b"\x00\x00") + AS_PATH + NEXT_HOP, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 7.1
        (attr(0x40, 1, b"\x03") + AS_PATH + NEXT_HOP, UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE),  # 7.1
        (ORIGIN + attr(0x40, 2, h("05 01 0000fde8")) + NEXT_HOP, UpdateSubcode.MALFORMED_AS_PATH),  # 7.2
        (ORIGIN + attr(0x40, 2, h("02 00")) + NEXT_HOP, UpdateSubcode.MALFORMED_AS_PATH),  # 7.2, empty segment
        (ORIGIN + attr(0x40, 2, h("02 02 0000fde8")) + NEXT_HOP, UpdateSubcode.MALFORMED_AS_PATH),  # overrun
        (ORIGIN + AS_PATH + attr(0x40, 3, h("c00002")), UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 7.3
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0x80, 4, h("000001")), UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 7.4
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0x40, 5, h("0064")), UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 7.5
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0xC0, 8, h("000001")), UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),  # 7.8
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0x80, 9, h("c00002")), UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 7.9
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0x80, 10, h("c000020101")), UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0xC0, 16, bytes(7)), UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),  # 7.14
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0xC0, 22, h("000600")), UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        (attr(0xC0, 1, b"\x00") + AS_PATH + NEXT_HOP, UpdateSubcode.ATTRIBUTE_FLAGS_ERROR),  # 3 c
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0x40, 10, b""), UpdateSubcode.ATTRIBUTE_FLAGS_ERROR),  # 3 c
        (AS_PATH + NEXT_HOP, UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE),  # 3 d
        (ORIGIN + AS_PATH, UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE),  # 3 d: NEXT_HOP with IPv4 NLRI
        (ORIGIN + AS_PATH + NEXT_HOP + attr(0xC0, 99, bytes(9))[:-2], UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 4
        (ORIGIN + AS_PATH + NEXT_HOP + b"\xc0\x63", UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 4: < 3 octets left
        (ORIGIN + AS_PATH + NEXT_HOP + b"\xd0\x63\x00", UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 4: < 4 with E
    ],
)
def test_treat_as_withdraw(attrs: bytes, subcode: int) -> None:
    withdrawn = h("08 0b")
    result = classify(update_wire(attrs, NLRI, withdrawn))
    assert result.action == TAW and result.update is None
    assert result.error is not None and result.error.subcode == subcode
    assert result.withdraw_nlri == (Ipv4Prefix.of("11.0.0.0/8"), Ipv4Prefix.of("10.1.0.0/24"))


def test_treat_as_withdraw_covers_mp_reach_routes() -> None:
    result = classify(update_wire(MP_REACH + attr(0x40, 1, b"\x09") + AS_PATH))
    assert result.action == TAW
    assert [r.route_type for r in result.withdraw_nlri] == [3]


def test_missing_as_path_with_mp_reach_only() -> None:
    result = classify(update_wire(MP_REACH + ORIGIN))
    assert result.action == TAW and result.error is not None
    assert result.error.subcode == UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE and result.error.data == b"\x02"


def test_withdrawal_only_needs_no_mandatory_attributes() -> None:
    result = classify(update_wire(b"", withdrawn=h("08 0b")))
    assert result.action == ErrorAction.NONE


def test_error_data_is_the_attribute() -> None:
    bad = attr(0x40, 1, b"\x00\x00")
    result = classify(update_wire(bad + AS_PATH + NEXT_HOP, NLRI))
    assert result.error is not None and result.error.data == bad


def test_attribute_discard() -> None:
    result = classify(update_wire(ORIGIN + AS_PATH + NEXT_HOP + attr(0x40, 6, b"\x01"), NLRI))  # 7.6
    assert result.action == ErrorAction.ATTRIBUTE_DISCARD and result.discarded_attrs == (6,)
    assert result.update is not None and [a.type_code for a in result.update.attributes] == [1, 2, 3]


def test_duplicate_attribute_keeps_the_first() -> None:  # 3 g
    result = classify(update_wire(ORIGIN + AS_PATH + NEXT_HOP + attr(0x40, 5, h("00000064"))
                                  + attr(0x40, 5, h("000000c8")), NLRI))
    assert result.action == ErrorAction.ATTRIBUTE_DISCARD and result.discarded_attrs == (5,)
    assert result.update is not None and result.update.get(5) == LocalPref(100)


def test_most_severe_wins() -> None:  # 3 h
    result = classify(update_wire(ORIGIN + AS_PATH + NEXT_HOP + attr(0x40, 6, b"\x01") + attr(0x40, 5, b""), NLRI))
    assert result.action == TAW and result.error is not None
    assert result.error.subcode == UpdateSubcode.ATTRIBUTE_LENGTH_ERROR


@pytest.mark.parametrize(
    ("attrs", "nlri", "withdrawn_field", "subcode"),
    [
        (MP_REACH + MP_REACH + ORIGIN + AS_PATH, b"", None, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),  # 3 g
        (attr(0x80, 15, h("0019 46")) * 2, b"", None, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),  # 3 g
        (attr(0x80, 14, h("0019 46 05 c000020100 00")), b"", None, UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),  # 7.11
        (attr(0x80, 14, h("0019 46 04 c0000201")), b"", None, UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        (attr(0x80, 14, h("0019 46 04 c0000201 00 03 05") + bytes(5)), b"", None,
         UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),  # EVPN route too short
        (attr(0x80, 14, h("0019 46 04 c0000201 00 02 25") + bytes(22) + h("2f") + bytes(14)), b"", None,
         UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),  # MAC length 47
        (attr(0x80, 15, h("0001 01 21 0a000000 00")), b"", None, UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),  # /33
        (attr(0x80, 15, h("0019 46 03 05")), b"", None, UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        (ORIGIN + AS_PATH + h("80 0e 40 0019"), b"", None, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # 4, MP overrun
        (ORIGIN + AS_PATH + attr(0x40, 77, b""), b"", None, UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE),
        (ORIGIN + AS_PATH + NEXT_HOP, h("21 0a000000 00"), None, UpdateSubcode.INVALID_NETWORK_FIELD),  # 5.3
        (ORIGIN + AS_PATH + NEXT_HOP, h("18 0a01"), None, UpdateSubcode.INVALID_NETWORK_FIELD),  # 5.3
        (b"", b"", h("0005 08 0000"), UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),  # withdrawn length overruns
        (b"", b"", h("0000 0009 4001"), UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),  # attribute length overruns
        (b"", b"", h("0001 0a 00"), UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),  # no room for attribute length
    ],
)
def test_session_reset(attrs: bytes, nlri: bytes, withdrawn_field: bytes | None, subcode: int) -> None:
    wire = frame(2, withdrawn_field) if withdrawn_field is not None else update_wire(attrs, nlri)
    result = classify(wire)
    assert result.action == ErrorAction.SESSION_RESET and result.session_reset and result.update is None
    assert result.error is not None and result.error.subcode == subcode
    assert Notification.from_error(result.error).code == ErrorCode.UPDATE_MESSAGE


def test_unknown_families_in_mp_attributes_are_kept_raw() -> None:
    upd = Update(attributes=(MpReachNlri(2, 1, bytes(32), (RawNlri(2, 1, h("40 20010db8 00000001")),)),
                             OriginAttr(0), AsPath()))
    result = classify(upd.encode())
    assert result.action == ErrorAction.NONE and result.update == upd


def test_pmsi_attribute_round_trip() -> None:
    _, pmsi = inclusive_multicast_route(RD, 5000, SYS_IP)
    upd = Update(attributes=(PmsiTunnelAttr(pmsi),))
    result = classify(upd.encode())
    assert result.update == upd and pmsi.vtep == IPv4Address(SYS_IP) and pmsi.vni == 5000

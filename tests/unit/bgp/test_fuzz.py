"""Hypothesis: whatever arrives, ``decode`` raises only ``RemoteBgpError`` (a
LocalBgpError would mean a decoder passed a peer's value into a constructor
unchecked) or returns a classified UPDATE; anything that decodes cleanly
re-encodes to the very same bytes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgp.attributes import (
    AsPath,
    AsSegment,
    ExtCommunities,
    Ipv4Prefix,
    LocalPref,
    MpReachNlri,
    NextHop,
    OriginAttr,
    PmsiTunnelAttr,
    UnknownAttribute,
)
from bgp.codec import (
    Keepalive,
    Notification,
    RouteRefresh,
    Update,
    UpdateResult,
    decode,
)
from bgp.constants import ErrorAction
from bgp.errors import RemoteBgpError
from bgp.evpn_nlri import (
    InclusiveMulticastRoute,
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    PmsiTunnel,
    RouteDistinguisher,
    RoutersMac,
    decode_evpn_nlri,
    encap_vxlan,
    route_target,
)
from tests.mutate import mutate
from tests.unit.bgp.test_codec import OPEN_GOLDEN, UPDATE_GOLDEN, every_attribute_update

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    OPEN_GOLDEN,
    UPDATE_GOLDEN,
    every_attribute_update().encode(),
    Keepalive().encode(),
    Notification(6, 2, b"shutdown").encode(),
    RouteRefresh(25, 70).encode(),
]


def decode_checked(data: bytes) -> object:
    try:
        msg = decode(data)
    except RemoteBgpError as exc:
        assert isinstance(exc.code, int) and isinstance(exc.subcode, int) and isinstance(exc.data, bytes)
        return None
    if isinstance(msg, UpdateResult):
        if msg.action == ErrorAction.NONE:
            assert msg.update is not None and msg.update.encode() == data
        elif msg.action in (ErrorAction.SESSION_RESET, ErrorAction.TREAT_AS_WITHDRAW):
            assert msg.update is None and msg.error is not None
        else:
            assert msg.update is not None and msg.discarded_attrs
            msg.update.encode()  # what survives still encodes
    else:
        assert msg.encode() == data
    return msg


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    mutate(draw, data)
    if draw(st.booleans()) and len(data) >= 19:
        data[16:18] = len(data).to_bytes(2, "big")  # keep the header honest to reach the body
        data[:16] = b"\xff" * 16
    return bytes(data)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_checked(data)


@FUZZ
@given(st.sampled_from([1, 2, 3, 4, 5]), st.binary(max_size=300))
def test_arbitrary_bodies_behind_a_valid_header(msg_type: int, body: bytes) -> None:
    decode_checked(b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes((msg_type,)) + body)


@FUZZ
@given(mutated())
def test_mutations_of_valid_messages(data: bytes) -> None:
    decode_checked(data)


@FUZZ
@given(st.binary(max_size=120))
def test_evpn_nlri_bytes(data: bytes) -> None:
    try:
        routes = decode_evpn_nlri(data)
    except RemoteBgpError:
        return
    assert b"".join(r.encode() for r in routes) == data


# --- structured round trips --------------------------------------------------------------
u8, u16, u24, u32 = (st.integers(0, (1 << b) - 1) for b in (8, 16, 24, 32))
ipv4 = st.builds(IPv4Address, u32)
ipv6 = st.builds(IPv6Address, st.integers(0, (1 << 128) - 1))
rds = st.one_of(
    st.builds(RouteDistinguisher.ipv4, ipv4, u16),
    st.builds(RouteDistinguisher.as2, u16, u32),
    st.builds(RouteDistinguisher.as4, u32, u16),
)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
esis = st.binary(min_size=10, max_size=10)
routes = st.one_of(
    st.builds(MacIpRoute, rds, macs, st.none() | ipv4 | ipv6, u24, st.none() | u24, esis, u32),
    st.builds(InclusiveMulticastRoute, rds, ipv4 | ipv6, u32),
    st.builds(IpPrefixRoute, rds, ipv4, st.integers(0, 32), ipv4, u24),
)
communities = st.one_of(
    st.builds(route_target, u16, u32), st.just(encap_vxlan()), st.builds(MacMobility, u32, u8),
    st.builds(RoutersMac, macs),
)


@st.composite
def evpn_updates(draw: st.DrawFn) -> Update:
    upd = Update.for_evpn(
        draw(st.lists(routes, max_size=6)), draw(ipv4), draw(st.lists(communities, max_size=5)),
        draw(st.none() | st.builds(PmsiTunnel.ingress_replication, u24, ipv4)),
        as_path=tuple(draw(st.lists(u32, max_size=4))), local_pref=draw(st.none() | u32),
    )
    extra = draw(st.lists(st.builds(UnknownAttribute, st.integers(200, 255), st.binary(max_size=300),
                                    st.just(0xD0) | st.just(0xF0)), max_size=2, unique_by=lambda a: a.type_code))
    return Update(attributes=upd.attributes + tuple(extra))


@FUZZ
@given(evpn_updates())
def test_evpn_update_round_trip(upd: Update) -> None:
    wire = upd.encode()
    result = decode(wire)
    assert isinstance(result, UpdateResult) and result.action == ErrorAction.NONE and result.update == upd


@settings(max_examples=500, deadline=None)
@given(st.lists(st.builds(Ipv4Prefix.of, st.builds(lambda a, n: f"{IPv4Address(a & (~0 << (32 - n)) & 0xFFFFFFFF)}/{n}",
                                                   u32, st.integers(0, 32))), max_size=5),
       st.lists(st.builds(AsSegment, st.integers(1, 4), st.lists(u32, min_size=1, max_size=5).map(tuple)),
                max_size=3))
def test_ipv4_update_round_trip(prefixes: list[Ipv4Prefix], segments: list[AsSegment]) -> None:
    attrs = (OriginAttr(1), AsPath(tuple(segments)), NextHop(IPv4Address("192.0.2.1")), LocalPref(1),
             ExtCommunities((encap_vxlan(),)), PmsiTunnelAttr(PmsiTunnel(3, 0, b"")),
             MpReachNlri(1, 1, IPv4Address("192.0.2.1"), tuple(prefixes)))
    upd = Update(tuple(prefixes), attrs, tuple(prefixes))
    result = decode(upd.encode())
    assert isinstance(result, UpdateResult) and result.update == upd

"""The minimal DNS client: golden messages built by hand from RFC 1035 section 4 (with
compression pointers), hostile messages, ID/question matching on loopback, and fuzzing."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.sources import dns
from bootstrap.sources.dns import (
    TYPE_A,
    TYPE_SRV,
    TYPE_TXT,
    DnsSource,
    Srv,
    answers_for,
    build_query,
    check_response,
    decode_name,
    encode_name,
    parse_message,
    srv_to_uris,
    sztp_txt_to_data,
)
from bootstrap.sources.model import DiscoveryContext, LocalDiscoveryError, RemoteProtocolError
from tests.unit.bootstrap_sources import EDITS, mutate

SRV_NAME = "_sztp.example.com"
TXT_NAME = "SN1._sztp.example.com"

# build_query(0x1234, "_sztp.example.com", SRV)
GOLDEN_QUERY = bytes.fromhex(
    "1234 0100 0001 0000 0000 0001"          # ID, RD, QD=1, AN=0, NS=0, AR=1
    "055f737a7470 076578616d706c65 03636f6d 00"  # _sztp . example . com .
    "0021 0001"                              # SRV, IN
    "00 0029 04d0 00000000 0000"              # OPT: root, type 41, 1232 octets, TTL 0, RDLEN 0
)

# Reply: two SRV records; owner names point at the question (offset 12 = 0x0c), targets
# are "bs1"/"bs2" + a pointer to "example.com" inside the question (offset 18 = 0x12).
GOLDEN_SRV_REPLY = bytes.fromhex(
    "1234 8180 0001 0002 0000 0000"          # QR RD RA, QD=1, AN=2
    "055f737a7470 076578616d706c65 03636f6d 00 0021 0001"
    "c00c 0021 0001 00000e10 000c"           # answer 1: TTL 3600, RDLEN 12
    "000a 0005 20fb 03627331 c012"           #   prio 10, weight 5, port 8443, bs1.example.com
    "c00c 0021 0001 00000e10 000c"           # answer 2
    "0014 0005 24e3 03627332 c012"           #   prio 20, weight 5, port 9443, bs2.example.com
)

GOLDEN_TXT_REPLY = bytes.fromhex(
    "beef 8180 0001 0001 0000 0000"
    "03534e31 055f737a7470 076578616d706c65 03636f6d 00 0010 0001"
    "c00c 0010 0001 0000003c 001d"           # TXT, TTL 60, RDLEN 29
    "08 63693d68656c6c6f"                    # "ci=hello"
    "08 6f633d6f776e6572"                    # "oc=owner"
    "0a 6f763d766f7563686572"                # "ov=voucher"
)


def test_query_golden():
    assert build_query(0x1234, SRV_NAME, TYPE_SRV) == GOLDEN_QUERY
    assert build_query(0x1234, SRV_NAME + ".", TYPE_SRV) == GOLDEN_QUERY


def test_srv_reply_golden():
    msg = parse_message(GOLDEN_SRV_REPLY)
    check_response(msg, 0x1234, SRV_NAME, TYPE_SRV)
    assert answers_for(msg, SRV_NAME, TYPE_SRV) == [Srv(10, 5, 8443, "bs1.example.com"),
                                                   Srv(20, 5, 9443, "bs2.example.com")]
    assert srv_to_uris(answers_for(msg, SRV_NAME, TYPE_SRV), SRV_NAME) == [
        "https://bs1.example.com:8443", "https://bs2.example.com:9443"]


def test_txt_reply_golden():
    msg = parse_message(GOLDEN_TXT_REPLY)
    check_response(msg, 0xBEEF, "sn1._SZTP.example.COM", TYPE_TXT)  # names compare case-insensitively
    (strings,) = answers_for(msg, TXT_NAME, TYPE_TXT)
    data = sztp_txt_to_data(list(strings), TXT_NAME)
    assert (data.conveyed_information, data.owner_certificate, data.ownership_voucher) == (
        b"hello", b"owner", b"voucher")


def test_srv_order_and_unavailable_target():
    recs = [Srv(20, 1, 1, "c.example"), Srv(10, 1, 2, "b.example"), Srv(10, 9, 3, "a.example"),
            Srv(0, 0, 0, ".")]
    assert srv_to_uris(recs, "x") == ["https://a.example:3", "https://b.example:2", "https://c.example:1"]
    with pytest.raises(RemoteProtocolError, match="port 0"):
        srv_to_uris([Srv(0, 0, 0, "a.example")], "x")
    with pytest.raises(RemoteProtocolError, match="invalid label"):
        srv_to_uris([Srv(0, 0, 443, "bad_target.example")], "x")


def test_txt_rules_of_rfc6763():
    first_wins = [b"CI=one", b"ci=two", b"=ignored", b"oc=o", b"ov=v", b"other=x"]
    assert sztp_txt_to_data(first_wins, "x").conveyed_information == b"one"
    with pytest.raises(RemoteProtocolError, match="lacks ov"):
        sztp_txt_to_data([b"ci=a", b"oc=b"], "x")
    with pytest.raises(RemoteProtocolError, match="no value"):
        sztp_txt_to_data([b"ci", b"oc=b", b"ov=c"], "x")


def test_cname_chain_is_followed():
    head = bytes.fromhex("0001 8180 0001 0002 0000 0000") + encode_name(SRV_NAME) + bytes.fromhex("0021 0001")
    alias = encode_name("alias.example.net")
    cname = bytes.fromhex("c00c 0005 0001 0000003c") + len(alias).to_bytes(2, "big") + alias
    alias_at = len(head) + 12
    srv_rdata = bytes.fromhex("0001 0001 01bb") + encode_name("bs.example.net")
    srv = (0xC000 | alias_at).to_bytes(2, "big") + bytes.fromhex("0021 0001 0000003c") \
        + len(srv_rdata).to_bytes(2, "big") + srv_rdata
    msg = parse_message(head + cname + srv)
    assert answers_for(msg, SRV_NAME, TYPE_SRV) == [Srv(1, 1, 443, "bs.example.net")]


def test_a_records():
    msg = bytes.fromhex("0002 8180 0001 0001 0000 0000") + encode_name("bs.example") + bytes.fromhex(
        "0001 0001 c00c 0001 0001 0000003c 0004 c6336407")
    assert answers_for(parse_message(msg), "bs.example", TYPE_A) == [ipaddress.IPv4Address("198.51.100.7")]


def _replace(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


@pytest.mark.parametrize(("msg", "why"), [
    (GOLDEN_SRV_REPLY[:11], "shorter than the 12-octet header"),
    (GOLDEN_SRV_REPLY[:20], "claims 7 octets, 1 present"),
    (GOLDEN_SRV_REPLY[:-1], "runs past the end"),
    (GOLDEN_SRV_REPLY + b"\x00", "after its last record"),
    (_replace(GOLDEN_SRV_REPLY, 35, b"\xc0\x23"), "points forward or into itself"),  # owner -> itself
    (_replace(GOLDEN_SRV_REPLY, 35, b"\xc0\x30"), "points forward"),
    (_replace(GOLDEN_SRV_REPLY, 35, b"\x40\x0c"), "label type"),
    (_replace(GOLDEN_SRV_REPLY, 45, b"\x00\x40"), "runs past the end"),              # RDLENGTH too big
    (_replace(GOLDEN_SRV_REPLY, 45, b"\x00\x0d"), "does not fill RDATA"),            # RDLENGTH too big by 1
    (_replace(GOLDEN_SRV_REPLY, 45, b"\x00\x06"), "only 6 octets"),
    (_replace(GOLDEN_TXT_REPLY, 51, b"\x09"), "runs past RDATA"),                    # first TXT string length
])
def test_hostile_messages_are_remote_faults(msg, why):
    with pytest.raises(RemoteProtocolError, match=why):
        parse_message(msg)


def test_pointer_chain_cannot_loop():
    # Two names pointing at each other: whichever is read first, the second pointer is not
    # strictly below the first's target.
    names = bytes.fromhex("01 61 c0 10" "01 62 c0 0c")  # a -> offset 16, b -> offset 12
    msg = bytes.fromhex("0000 8180 0001 0000 0000 0000") + names + b"\x00\x01\x00\x01"
    with pytest.raises(RemoteProtocolError, match="points forward"):
        parse_message(msg)


def test_overlong_names_are_refused():
    labels = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 4*64 + 1 = 257 octets
    with pytest.raises(RemoteProtocolError, match="longer than 255"):
        decode_name(b"\x00" * 12 + labels, 12)
    with pytest.raises(ValueError):
        encode_name(".".join(["a" * 63] * 4))
    with pytest.raises(ValueError):
        encode_name("a" * 64 + ".example")


@pytest.mark.parametrize(("qid", "name", "qtype", "flags", "why"), [
    (0x1235, SRV_NAME, TYPE_SRV, None, "does not answer"),
    (0x1234, "_sztp.example.net", TYPE_SRV, None, "not ours"),
    (0x1234, SRV_NAME, TYPE_TXT, None, "not ours"),
    (0x1234, SRV_NAME, TYPE_SRV, 0x0180, "does not answer"),  # QR clear: a query, not a reply
    (0x1234, SRV_NAME, TYPE_SRV, 0x8380, "truncated"),
    (0x1234, SRV_NAME, TYPE_SRV, 0x8185, "RCODE 5"),
    (0x1234, SRV_NAME, TYPE_SRV, 0x9180, "opcode 2"),
])
def test_replies_that_do_not_answer_our_query(qid, name, qtype, flags, why):
    data = GOLDEN_SRV_REPLY if flags is None else _replace(GOLDEN_SRV_REPLY, 2, flags.to_bytes(2, "big"))
    with pytest.raises(RemoteProtocolError, match=why):
        check_response(parse_message(data), qid, name, qtype)


def test_nxdomain_is_an_empty_answer():
    data = _replace(GOLDEN_SRV_REPLY, 2, b"\x81\x83")
    msg = parse_message(data)
    check_response(msg, 0x1234, SRV_NAME, TYPE_SRV)
    assert msg.rcode == 3


class _FakeDns(asyncio.DatagramProtocol):
    """Answers every query with ``reply(query)`` -> list of datagrams (maybe none)."""

    def __init__(self, reply):
        self.reply = reply
        self.queries: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.queries.append(data)
        for out in self.reply(data):
            self.transport.sendto(out, addr)


def _answer_srv(query: bytes) -> bytes:
    """Our golden SRV reply, re-addressed to the query's ID."""
    return query[:2] + GOLDEN_SRV_REPLY[2:]


async def _with_fake(reply, body):
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _FakeDns(reply), local_addr=("127.0.0.1", 0))
    try:
        return await body(transport.get_extra_info("sockname")[1], proto)
    finally:
        transport.close()


def test_query_drops_spoofed_ids_and_takes_the_real_reply():
    def reply(q):
        wrong = ((int.from_bytes(q[:2], "big") + 1) & 0xFFFF).to_bytes(2, "big")
        return [wrong + GOLDEN_SRV_REPLY[2:], _answer_srv(q)]

    async def body(port, proto):
        return await dns.query("127.0.0.1", SRV_NAME, TYPE_SRV, port=port, timeout=1.0)

    msg = asyncio.run(_with_fake(reply, body))
    assert len(answers_for(msg, SRV_NAME, TYPE_SRV)) == 2


def test_query_retries_then_gives_up():
    async def body(port, proto):
        got = await dns.query("127.0.0.1", SRV_NAME, TYPE_SRV, port=port, timeout=0.1, attempts=3)
        return got, len(proto.queries), {q[:2] for q in proto.queries}

    got, n, ids = asyncio.run(_with_fake(lambda q: [], body))
    assert got is None and n == 3 and len(ids) >= 2  # a fresh random ID per attempt (collision 1 in 65536)


def test_source_device_specific_first_then_srv():
    def reply(q):
        if q[12:16] == b"\x03SN1":
            return [q[:2] + GOLDEN_TXT_REPLY[2:]]
        if q[12:16] == b"\x03SN2":  # NXDOMAIN for the device-specific name
            return [q[:2] + b"\x81\x83" + q[4:6] + b"\x00\x00\x00\x00\x00\x00" + q[12:-11]]
        if q[12:16] == b"\x03SN3":  # a TXT record without "oc" and "ov"
            rr = bytes.fromhex("c00c 0010 0001 0000003c 0009") + b"\x08ci=hello"
            return [q[:2] + bytes.fromhex("8180 0001 0001 0000 0000") + q[12:-11] + rr]
        return [_answer_srv(q)]

    async def body(port, proto):
        a = await DnsSource(["127.0.0.1"], "example.com", port=port).discover(DiscoveryContext(serial_number="SN1"))
        b = await DnsSource(["127.0.0.1"], "example.com", port=port).discover(DiscoveryContext(serial_number="SN2"))
        c = await DnsSource(["127.0.0.1"], port=port).discover(DiscoveryContext(serial_number="SN2"))
        d = await DnsSource(["127.0.0.1"], "example.com", port=port).discover(DiscoveryContext(serial_number="SN3"))
        return a, b, c, d

    a, b, c, d = asyncio.run(_with_fake(reply, body))
    assert [s.inline.ownership_voucher for s in a] == [b"voucher"]
    assert a[0].uri.startswith("dns://127.0.0.1:") and a[0].uri.endswith("/SN1._sztp.example.com?type=TXT")
    assert [s.uri for s in b] == ["https://bs1.example.com:8443", "https://bs2.example.com:9443"]
    assert c == []  # no domain: nothing to ask
    assert [s.uri for s in d] == [s.uri for s in b]  # a broken TXT record does not hide the SRV records


def test_source_refused_is_a_remote_fault_with_the_rcode():
    async def body(port, proto):
        return await DnsSource(["127.0.0.1"], "example.com", port=port).discover(DiscoveryContext())

    with pytest.raises(RemoteProtocolError) as info:
        asyncio.run(_with_fake(lambda q: [q[:2] + b"\x81\x85" + q[4:]], body))
    assert info.value.code == 5


def test_serial_that_cannot_be_a_label_is_a_local_fault():
    with pytest.raises(LocalDiscoveryError):
        asyncio.run(DnsSource(["127.0.0.1"], "example.com").discover(DiscoveryContext(serial_number="a.b")))


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])




MESSAGES = st.one_of(
    st.binary(max_size=200),
    st.builds(mutate, st.sampled_from([GOLDEN_SRV_REPLY, GOLDEN_TXT_REPLY, GOLDEN_QUERY]), EDITS),
)


@FUZZ
@given(MESSAGES)
def test_fuzz_replies_raise_only_remote_errors(data):
    try:
        msg = parse_message(data)
        for name, qtype in ((SRV_NAME, TYPE_SRV), (TXT_NAME, TYPE_TXT)):
            check_response(msg, int.from_bytes(data[:2], "big"), name, qtype)
            found = answers_for(msg, name, qtype)
            if qtype == TYPE_SRV:
                srv_to_uris([s for s in found if isinstance(s, Srv)], name)
            elif found:
                sztp_txt_to_data([s for t in found for s in t], name)
    except RemoteProtocolError:
        pass

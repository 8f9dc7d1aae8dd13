"""XFRM message layout: fields where linux/xfrm.h puts them (the kernel test is tests/netns/test_xfrm.py)."""

import struct

from ipsec.engine import xfrm_codec as x


def test_newsa_layout():
    sel = x.Selector("198.19.255.1/32", "198.19.255.2/32")
    sa = x.XfrmSa("198.18.1.2", "198.18.2.2", 0xC0FFEE01, bytes(range(20)), 7, sel)
    msg = x.new_sa(sa, 5)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, seq) == (len(msg), x.XFRM_MSG_NEWSA, 5)
    assert flags == x.NLM_F_REQUEST | x.NLM_F_ACK | x.NLM_F_CREATE | x.NLM_F_EXCL
    info = msg[16 : 16 + 224]
    assert info[0:4] == bytes([198, 19, 255, 2]) and info[16:20] == bytes([198, 19, 255, 1])  # sel daddr, saddr
    assert info[42:44] == bytes([32, 32])  # prefix lengths
    assert info[56:60] == bytes([198, 18, 2, 2]) and info[72:76] == bytes.fromhex("c0ffee01")  # id.daddr, id.spi
    assert info[76] == 50  # id.proto = ESP
    assert info[80:84] == bytes([198, 18, 1, 2])  # saddr
    reqid, family, mode, _win, flags_ = struct.unpack_from("=IHBBB", info, 208)
    assert (reqid, family, mode, flags_) == (7, 2, x.XFRM_MODE_TUNNEL, x.XFRM_STATE_ESN)
    attrs = msg[16 + 224 :]
    alen, atype = struct.unpack_from("=HH", attrs)
    assert atype == x.XFRMA_ALG_AEAD and attrs[4:21] == b"rfc4106(gcm(aes))"
    assert struct.unpack_from("=II", attrs, 68) == (160, 128)  # key bits incl. salt, ICV bits
    enc = attrs[(alen + 3) & ~3 :]
    assert struct.unpack_from("=HH", enc)[1] == x.XFRMA_ENCAP
    assert enc[4:6] == struct.pack("=H", 2) and enc[6:10] == bytes.fromhex("11941194")  # ports 4500 big-endian


def test_policy_round_trip():
    pol = x.XfrmPolicy(x.Selector("198.19.255.2/32", "198.19.255.1/32"), x.XFRM_POLICY_FWD, "198.18.2.2",
                       "198.18.1.2", 9)
    body = pol.body()
    assert len(body) == 168 + 4 + 64
    info = x.parse_policy(body)
    assert (info.src, info.dst, info.direction, info.tmpl_src, info.tmpl_dst, info.reqid) == (
        "198.19.255.2/32", "198.19.255.1/32", x.XFRM_POLICY_FWD, "198.18.2.2", "198.18.1.2", 9)


def test_error_with_extended_ack():
    req = struct.pack("=IHHII", 16, x.XFRM_MSG_NEWSA, 5, 1, 0)
    msg = b"Requested AEAD algorithm not found\x00"
    tlv = struct.pack("=HH", 4 + len(msg), x.NLMSGERR_ATTR_MSG) + msg
    tlv += bytes(-len(tlv) % 4)
    body = struct.pack("=i", -38) + req + tlv
    reply = x.Reply(x.NLMSG_ERROR, x.NLM_F_CAPPED | x.NLM_F_ACK_TLVS, 1, body)
    assert x.error_of(reply) == (38, "Requested AEAD algorithm not found")
    assert x.split(struct.pack("=IHHII", 16 + len(body), x.NLMSG_ERROR, 0x300, 1, 0) + body)[0].seq == 1


def test_sa_dump_counters():
    """A GETSA dump's state: the counters are read from where linux/xfrm.h puts curlft and stats (the
    kernel's own values are checked against `ip -s xfrm state` in tests/e2e/appliance)."""
    sa = x.XfrmSa("198.18.1.2", "198.18.2.2", 0xC0FFEE01, bytes(range(20)), 7,
                  x.Selector("198.19.255.1/32", "198.19.255.2/32"))
    info = bytearray(x.new_sa(sa, 1)[16 : 16 + 224])
    struct.pack_into("=4Q", info, 160, 123456, 789, 1_700_000_000, 1_700_000_001)  # curlft
    struct.pack_into("=3I", info, 192, 0, 5, 3)  # stats: replay_window, replay, integrity_failed
    got = x.parse_sa(bytes(info) + b"\x08\x00\x01\x00")
    assert got == x.SaInfo("198.18.1.2", "198.18.2.2", 0xC0FFEE01, 7, 123456, 789, 5, 3)


def test_a_non_esn_sa_still_gets_its_replay_window():
    """Without XFRMA_REPLAY_ESN_VAL a non-ESN state has no replay window in the kernel (`ip xfrm state`:
    replay-window 0) and takes a replayed packet again: the attribute goes with every SA, the ESN flag
    only with ESN (found with strongSwan, which proposes no ESN by default: tests/e2e/appliance)."""
    sa = x.XfrmSa("198.18.1.2", "198.18.2.2", 0xC0FFEE02, bytes(range(20)), 7,
                  x.Selector("198.19.255.1/32", "198.19.255.2/32"), esn=False)
    msg = x.new_sa(sa, 1)
    info, attrs = msg[16 : 16 + 224], msg[16 + 224 :]
    assert info[216] == 0  # flags: no XFRM_STATE_ESN
    found = {}
    off = 0
    while off < len(attrs):
        alen, atype = struct.unpack_from("=HH", attrs, off)
        found[atype] = attrs[off + 4 : off + alen]
        off += (alen + 3) & ~3
    bmp_len, _oseq, _seq, _oseq_hi, _seq_hi, window = struct.unpack_from("=6I", found[x.XFRMA_REPLAY_ESN_VAL])
    assert (bmp_len, window) == (1024 // 32, 1024)

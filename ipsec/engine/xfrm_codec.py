"""Kernel XFRM netlink messages (linux/xfrm.h), built and parsed without I/O.

The same SA / policy model as the userspace engine, expressed as XFRM states
(ESP, tunnel mode, rfc4106(gcm(aes)), UDP encapsulation, ESN replay state) and
policies (out / in / fwd with one ESP tunnel template). Struct layouts are the
x86-64 / aarch64 ABI of the uapi header; sizes are asserted below.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ipsec.constants import IPPROTO_ESP

# netlink (linux/netlink.h)
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: the request payload was left out
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended ack attributes follow
NLMSGERR_ATTR_MSG = 1
NETLINK_XFRM = 6
NETLINK_EXT_ACK = 11

# linux/xfrm.h
XFRM_MSG_NEWSA, XFRM_MSG_DELSA, XFRM_MSG_GETSA = 0x10, 0x11, 0x12
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 0x13, 0x14, 0x15
XFRM_MSG_UPDSA = 0x1A
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_ALG_AEAD = 18
XFRMA_REPLAY_ESN_VAL = 23
XFRM_MODE_TUNNEL = 1
XFRM_STATE_ESN = 128
XFRM_POLICY_IN, XFRM_POLICY_OUT, XFRM_POLICY_FWD = 0, 1, 2
XFRM_INF = (1 << 64) - 1
UDP_ENCAP_ESPINUDP = 2  # linux/udp.h
AF_INET = 2
AEAD_GCM = b"rfc4106(gcm(aes))"

_nlmsghdr = struct.Struct("=IHHII")
_nlattr = struct.Struct("=HH")
# struct xfrm_selector: daddr, saddr, dport, dport_mask, sport, sport_mask, family,
# prefixlen_d, prefixlen_s, proto, (3 pad), ifindex, user
_selector = struct.Struct("=16s16sHHHHHBBB3xiI")
_lifetime_cfg = struct.Struct("=8Q")
_lifetime_cur = struct.Struct("=4Q")
_stats = struct.Struct("=3I")
_sa_tail = struct.Struct("=IIHBBB7x")  # seq, reqid, family, mode, replay_window, flags, pad to 8
_policy_tail = struct.Struct("=IIBBBB")  # priority, index, dir, action, flags, share
_usersa_id = struct.Struct("=16s4sHBx")
_tmpl = struct.Struct("=16s4sB3xH2x16sIBBBxIII")
_algo_aead = struct.Struct("=64sII")
_encap = struct.Struct("=HHH2x16s")
_esn = struct.Struct("=6I")

SELECTOR_LEN = _selector.size
USERSA_INFO_LEN = 224
USERPOLICY_INFO_LEN = 168
assert SELECTOR_LEN == 56 and _tmpl.size == 64 and _encap.size == 24 and _usersa_id.size == 24


def _addr(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed + bytes(12)


def _be16(port: int) -> int:
    """A port in network byte order, for a field packed in native order."""
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _nlattr.pack(_nlattr.size + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def nlmsg(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return _nlmsghdr.pack(_nlmsghdr.size + len(body), msg_type, flags, seq, 0) + body


@dataclass(frozen=True)
class Selector:
    src: str  # "198.19.255.1/32"
    dst: str
    proto: int = 0

    def pack(self) -> bytes:
        s, d = ipaddress.IPv4Network(self.src), ipaddress.IPv4Network(self.dst)
        return _selector.pack(_addr(str(d.network_address)), _addr(str(s.network_address)), 0, 0, 0, 0, AF_INET,
                              d.prefixlen, s.prefixlen, self.proto, 0, 0)


@dataclass(frozen=True)
class XfrmSa:
    """One direction of a child SA as a kernel state."""

    src: str  # outer (WAN) source
    dst: str  # outer destination
    spi: int
    key: bytes  # AES key followed by the 4-octet salt (RFC 4106 8.1)
    reqid: int
    selector: Selector
    encap: tuple[int, int] | None = (4500, 4500)  # UDP source, destination port (RFC 3948)
    esn: bool = True
    window: int = 1024
    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_s: int = 0
    hard_s: int = 0

    def body(self) -> bytes:
        lft = _lifetime_cfg.pack(self.soft_bytes or XFRM_INF, self.hard_bytes or XFRM_INF, XFRM_INF, XFRM_INF,
                                 self.soft_s, self.hard_s, 0, 0)
        info = (
            self.selector.pack()
            + _addr(self.dst) + self.spi.to_bytes(4, "big") + bytes((IPPROTO_ESP, 0, 0, 0))  # struct xfrm_id
            + _addr(self.src)
            + lft
            + _lifetime_cur.pack(0, 0, 0, 0)
            + _stats.pack(0, 0, 0)
            + _sa_tail.pack(0, self.reqid, AF_INET, XFRM_MODE_TUNNEL, 0, XFRM_STATE_ESN if self.esn else 0)
        )
        assert len(info) == USERSA_INFO_LEN
        attrs = _attr(XFRMA_ALG_AEAD, _algo_aead.pack(AEAD_GCM, len(self.key) * 8, 128) + self.key)
        if self.encap:
            # struct xfrm_encap_tmpl: type (host order), ports (network order), original address
            sport, dport = self.encap
            attrs += _attr(XFRMA_ENCAP, _encap.pack(UDP_ENCAP_ESPINUDP, _be16(sport), _be16(dport), bytes(16)))
        if self.window:
            # the replay window, with or without ESN: without the attribute the kernel keeps no replay
            # state for a non-ESN SA at all (strongSwan proposes no ESN by default; found against it)
            words = self.window // 32
            attrs += _attr(XFRMA_REPLAY_ESN_VAL, _esn.pack(words, 0, 0, 0, 0, self.window) + bytes(4 * words))
        return info + attrs


def new_sa(sa: XfrmSa, seq: int, update: bool = False) -> bytes:
    flags = NLM_F_REQUEST | NLM_F_ACK | (0 if update else NLM_F_CREATE | NLM_F_EXCL)
    return nlmsg(XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA, flags, seq, sa.body())


def del_sa(dst: str, spi: int, seq: int) -> bytes:
    body = _usersa_id.pack(_addr(dst), spi.to_bytes(4, "big"), AF_INET, IPPROTO_ESP)
    return nlmsg(XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, seq, body)


@dataclass(frozen=True)
class XfrmPolicy:
    selector: Selector
    direction: int  # XFRM_POLICY_IN / OUT / FWD
    tmpl_src: str  # outer addresses of the ESP tunnel
    tmpl_dst: str
    reqid: int
    priority: int = 0

    def body(self) -> bytes:
        lft = _lifetime_cfg.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
        info = (self.selector.pack() + lft + _lifetime_cur.pack(0, 0, 0, 0)
                + _policy_tail.pack(self.priority, 0, self.direction, 0, 0, 0))
        info += bytes(-len(info) % 8)
        assert len(info) == USERPOLICY_INFO_LEN
        # aalgos/ealgos/calgos all-ones: any algorithm (what iproute2 sends by default)
        tmpl = _tmpl.pack(_addr(self.tmpl_dst), b"\x00" * 4, IPPROTO_ESP, AF_INET, _addr(self.tmpl_src),
                          self.reqid, XFRM_MODE_TUNNEL, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
        return info + _attr(XFRMA_TMPL, tmpl)


def new_policy(pol: XfrmPolicy, seq: int) -> bytes:
    return nlmsg(XFRM_MSG_NEWPOLICY, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, pol.body())


def del_policy(selector: Selector, direction: int, seq: int) -> bytes:
    body = selector.pack() + struct.pack("=IB3x", 0, direction)
    return nlmsg(XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def dump(msg_type: int, seq: int) -> bytes:
    return nlmsg(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, bytes(USERSA_INFO_LEN if msg_type == XFRM_MSG_GETSA
                                                                   else USERPOLICY_INFO_LEN))


# --- parsing replies -----------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    msg_type: int
    flags: int
    seq: int
    body: bytes


def split(data: bytes) -> list[Reply]:
    out = []
    off = 0
    while off + _nlmsghdr.size <= len(data):
        length, mtype, flags, seq, _pid = _nlmsghdr.unpack_from(data, off)
        if length < _nlmsghdr.size or off + length > len(data):
            raise ValueError(f"netlink message length {length} does not fit the datagram")
        out.append(Reply(mtype, flags, seq, data[off + _nlmsghdr.size : off + length]))
        off += (length + 3) & ~3
    return out


def error_of(reply: Reply) -> tuple[int, str | None]:
    """(errno, extended-ack message) of an NLMSG_ERROR; errno 0 is an ack.

    Layout: int error | the request's nlmsghdr | [its payload unless NLM_F_CAPPED] | TLVs."""
    (err,) = struct.unpack_from("=i", reply.body)
    msg = None
    if reply.flags & NLM_F_ACK_TLVS and len(reply.body) >= 4 + _nlmsghdr.size:
        (req_len,) = struct.unpack_from("=I", reply.body, 4)
        off = 4 + (_nlmsghdr.size if reply.flags & NLM_F_CAPPED else (req_len + 3) & ~3)
        while off + 4 <= len(reply.body):
            alen, atype = _nlattr.unpack_from(reply.body, off)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                msg = reply.body[off + 4 : off + alen].rstrip(b"\x00").decode(errors="replace")
            off += (alen + 3) & ~3
    return -err, msg


@dataclass(frozen=True)
class PolicyInfo:
    src: str
    dst: str
    direction: int
    tmpl_src: str | None
    tmpl_dst: str | None
    reqid: int | None


def parse_policy(body: bytes) -> PolicyInfo:
    d, s, *_rest = _selector.unpack_from(body)
    plen_d, plen_s = body[42], body[43]
    direction = body[56 + 64 + 32 + 8]
    tsrc = tdst = None
    reqid = None
    off = USERPOLICY_INFO_LEN
    while off + 4 <= len(body):
        alen, atype = _nlattr.unpack_from(body, off)
        if alen < 4:
            break
        if atype == XFRMA_TMPL and alen >= 4 + _tmpl.size:
            t = _tmpl.unpack_from(body, off + 4)
            tdst = str(ipaddress.IPv4Address(t[0][:4]))
            tsrc = str(ipaddress.IPv4Address(t[4][:4]))
            reqid = t[5]
        off += (alen + 3) & ~3
    return PolicyInfo(f"{ipaddress.IPv4Address(s[:4])}/{plen_s}", f"{ipaddress.IPv4Address(d[:4])}/{plen_d}",
                      direction, tsrc, tdst, reqid)


@dataclass(frozen=True)
class SaInfo:
    """A kernel ESP state as a dump shows it: who, and its counters (struct xfrm_usersa_info's curlft
    and stats, which the kernel keeps per state)."""

    src: str
    dst: str
    spi: int
    reqid: int
    bytes: int
    packets: int
    replay: int  # packets dropped as replays
    integrity_failed: int  # packets whose ICV did not verify


_SA_ID, _SA_SADDR, _SA_CURLFT, _SA_STATS, _SA_TAIL = 56, 80, 160, 192, 204  # offsets in xfrm_usersa_info


def parse_sa(body: bytes) -> SaInfo:
    if len(body) < USERSA_INFO_LEN:
        raise ValueError(f"xfrm_usersa_info of {len(body)} octets, want {USERSA_INFO_LEN}")
    daddr, spi, _family, _proto = _usersa_id.unpack_from(body, _SA_ID)
    nbytes, packets, _add, _use = _lifetime_cur.unpack_from(body, _SA_CURLFT)
    _window, replay, integrity = _stats.unpack_from(body, _SA_STATS)
    _seq, reqid, *_rest = _sa_tail.unpack_from(body, _SA_TAIL)
    return SaInfo(str(ipaddress.IPv4Address(body[_SA_SADDR:_SA_SADDR + 4])), str(ipaddress.IPv4Address(daddr[:4])),
                  int.from_bytes(spi, "big"), reqid, nbytes, packets, replay, integrity)

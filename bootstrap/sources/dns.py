"""DNS as a source of bootstrap servers (RFC 8572 section 4, "DNS Server"), with a DNS client.

Queries, in this order, under the domain learned from DHCP (option 15) or configured:

1. device-specific: TXT at ``<serial-number>._sztp.<domain>``; its key=value strings
   (RFC 6763 section 6 syntax) carry signed bootstrapping data: ``ov`` ownership voucher,
   ``oc`` owner certificate, ``ci`` conveyed information (binary values).
2. device-independent, only if (1) found nothing: SRV at ``_sztp.<domain>``; each record
   names a bootstrap server ``https://<target>:<port>`` (RFC 2782 fields). DNS is
   unauthenticated, so these are untrusted bootstrap servers (RFC 8572 section 5.3).

The codec (RFC 1035 section 4) is sans-IO: ``build_query`` and ``parse_message`` /
``answers_for``. ``query`` sends over UDP from a connected socket (so the kernel drops
datagrams from anyone but the server) and matches ID and question (RFC 5452 section 9.1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from dataclasses import dataclass

from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    LocalDiscoveryError,
    RemoteProtocolError,
    SignedBootstrappingData,
    check_bootstrap_uri,
    check_hostname,
)

log = logging.getLogger("bootstrap.sources.dns")

# RFC 1035 section 3.2.2 / 3.2.4, RFC 2782, RFC 6891.
TYPE_A = 1
TYPE_CNAME = 5
TYPE_TXT = 16
TYPE_SRV = 33
TYPE_OPT = 41
CLASS_IN = 1
# RFC 1035 section 4.1.1 RCODEs we act on.
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
HEADER_LEN = 12
FLAG_QR = 0x8000
FLAG_TC = 0x0200
FLAG_RD = 0x0100
MAX_NAME_WIRE = 255  # RFC 1035 section 3.1
MAX_LABEL = 63
POINTER_MASK = 0xC0
SZTP_LABEL = "_sztp"  # RFC 8572 section 4, "DNS Server"
SZTP_TXT_KEYS = {"ov": "ownership_voucher", "oc": "owner_certificate", "ci": "conveyed_information"}

# Tuning.
EDNS_UDP_SIZE = 1232  # DNS flag day 2020: avoids fragmentation on common paths
QUERY_TIMEOUT_S = 1.0
QUERY_ATTEMPTS = 2
MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class Record:
    """One resource record. ``data`` is decoded for A (IPv4Address), CNAME (str), TXT
    (tuple of bytes), SRV (Srv); raw bytes otherwise."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    data: object


@dataclass(frozen=True)
class Message:
    qid: int
    flags: int
    questions: tuple[tuple[str, int, int], ...]
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]

    @property
    def rcode(self) -> int:
        return self.flags & 0x000F


def encode_name(name: str) -> bytes:
    """Dotted text -> uncompressed wire labels (RFC 1035 section 3.1). Local input: our own
    query names, so a bad one is our fault (ValueError)."""
    text = name[:-1] if name.endswith(".") else name
    out = bytearray()
    for label in text.split(".") if text else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) <= MAX_LABEL:
            raise ValueError(f"DNS label {label!r} in {name!r} must be 1..63 octets")
        out += bytes((len(raw),)) + raw
    out.append(0)
    if len(out) > MAX_NAME_WIRE:
        raise ValueError(f"DNS name {name!r} is longer than 255 octets")
    return bytes(out)


def build_query(qid: int, name: str, qtype: int, *, edns_size: int = EDNS_UDP_SIZE) -> bytes:
    """A standard query with RD set and one EDNS(0) OPT record (RFC 6891 section 6.1.2).

        header:   ID | QR=0 Opcode=0 RD=1 | QDCOUNT=1 | ANCOUNT=0 | NSCOUNT=0 | ARCOUNT=1
        question: QNAME | QTYPE | QCLASS=IN
        OPT RR:   NAME=root | TYPE=41 | CLASS=UDP payload size | TTL=0 | RDLEN=0
    """
    header = b"".join(v.to_bytes(2, "big") for v in (qid, FLAG_RD, 1, 0, 0, 1))
    question = encode_name(name) + qtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
    opt = b"\x00" + TYPE_OPT.to_bytes(2, "big") + edns_size.to_bytes(2, "big") + bytes(4) + bytes(2)
    return header + question + opt


def decode_name(msg: bytes, offset: int) -> tuple[str, int]:
    """Read a possibly compressed name (RFC 1035 section 4.1.4) at ``offset``.

    Returns the dotted name and the offset just past it in the original position. A
    pointer must point strictly before the label that holds it, which rules out loops.
    """
    labels: list[str] = []
    wire_len = 0
    end: int | None = None
    at = offset
    floor = offset  # pointers must go below the start of the current run of labels
    while True:
        if at >= len(msg):
            raise RemoteProtocolError(f"DNS name at offset {offset} runs past the end of the message")
        length = msg[at]
        if length & POINTER_MASK == POINTER_MASK:
            if at + 1 >= len(msg):
                raise RemoteProtocolError(f"DNS compression pointer at offset {at} is truncated")
            target = int.from_bytes(msg[at : at + 2], "big") & 0x3FFF
            if target >= floor:
                raise RemoteProtocolError(f"DNS compression pointer at offset {at} points forward or into "
                                          f"itself (to {target})")
            if end is None:
                end = at + 2
            at = floor = target
            continue
        if length & POINTER_MASK:
            raise RemoteProtocolError(f"DNS label type {length >> 6:#x} at offset {at} is not supported")
        at += 1
        if length == 0:
            break
        raw = msg[at : at + length]
        if len(raw) != length:
            raise RemoteProtocolError(f"DNS label at offset {at - 1} claims {length} octets, {len(raw)} present")
        wire_len += 1 + length
        if wire_len + 1 > MAX_NAME_WIRE:
            raise RemoteProtocolError(f"DNS name at offset {offset} is longer than 255 octets")
        if b"." in raw:
            raise RemoteProtocolError(f"DNS label at offset {at - 1} contains a dot")
        labels.append(raw.decode("latin-1"))
        at += length
    return ".".join(labels), (end if end is not None else at)


def _u16(msg: bytes, at: int, what: str) -> int:
    if at + 2 > len(msg):
        raise RemoteProtocolError(f"DNS {what} at offset {at} is truncated")
    return int.from_bytes(msg[at : at + 2], "big")


def _record(msg: bytes, at: int) -> tuple[Record, int]:
    """One RR (RFC 1035 section 4.1.3):
        NAME | TYPE (2) | CLASS (2) | TTL (4) | RDLENGTH (2) | RDATA (RDLENGTH)
    """
    name, at = decode_name(msg, at)
    if at + 10 > len(msg):
        raise RemoteProtocolError(f"DNS record {name!r} at offset {at} has a truncated fixed part")
    rtype, rclass = _u16(msg, at, "type"), _u16(msg, at + 2, "class")
    ttl = int.from_bytes(msg[at + 4 : at + 8], "big")
    rdlen = _u16(msg, at + 8, "rdlength")
    start = at + 10
    stop = start + rdlen
    if stop > len(msg):
        raise RemoteProtocolError(f"DNS record {name!r}: RDLENGTH {rdlen} runs past the end of the message")
    return Record(name, rtype, rclass, ttl, _rdata(msg, rtype, start, stop, name)), stop


def _rdata(msg: bytes, rtype: int, start: int, stop: int, owner: str) -> object:
    rd = msg[start:stop]
    if rtype == TYPE_A:
        if len(rd) != 4:
            raise RemoteProtocolError(f"DNS A record {owner!r} has {len(rd)} octets of data, not 4")
        return ipaddress.IPv4Address(rd)
    if rtype == TYPE_CNAME:
        target, end = decode_name(msg, start)
        if end != stop:
            raise RemoteProtocolError(f"DNS CNAME record {owner!r}: name does not fill RDATA exactly")
        return target
    if rtype == TYPE_TXT:
        # RFC 1035 section 3.3.14: one or more <character-string>s, each a length octet + data.
        strings = []
        at = 0
        while at < len(rd):
            n = rd[at]
            if at + 1 + n > len(rd):
                raise RemoteProtocolError(f"DNS TXT record {owner!r}: string at {at} runs past RDATA")
            strings.append(rd[at + 1 : at + 1 + n])
            at += 1 + n
        if not strings:
            raise RemoteProtocolError(f"DNS TXT record {owner!r} is empty")
        return tuple(strings)
    if rtype == TYPE_SRV:
        # RFC 2782: Priority (2) | Weight (2) | Port (2) | Target (name)
        if len(rd) < 7:
            raise RemoteProtocolError(f"DNS SRV record {owner!r} has only {len(rd)} octets of data")
        target, end = decode_name(msg, start + 6)
        if end != stop:
            raise RemoteProtocolError(f"DNS SRV record {owner!r}: target does not fill RDATA exactly")
        return Srv(int.from_bytes(rd[0:2], "big"), int.from_bytes(rd[2:4], "big"),
                   int.from_bytes(rd[4:6], "big"), target)
    return bytes(rd)


def parse_message(msg: bytes) -> Message:
    """Parse a whole DNS message strictly: every count honoured, no trailing octets."""
    if len(msg) < HEADER_LEN:
        raise RemoteProtocolError(f"DNS message of {len(msg)} octets is shorter than the 12-octet header")
    qid, flags, qd, an, ns, ar = (int.from_bytes(msg[i : i + 2], "big") for i in range(0, HEADER_LEN, 2))
    at = HEADER_LEN
    questions = []
    for _ in range(qd):
        name, at = decode_name(msg, at)
        questions.append((name, _u16(msg, at, "question type"), _u16(msg, at + 2, "question class")))
        at += 4
    sections: list[list[Record]] = [[], [], []]
    for section, count in zip(sections, (an, ns, ar), strict=True):
        for _ in range(count):
            rec, at = _record(msg, at)
            section.append(rec)
    if at != len(msg):
        raise RemoteProtocolError(f"DNS message has {len(msg) - at} octets after its last record")
    return Message(qid, flags, tuple(questions), *(tuple(s) for s in sections))


def same_name(a: str, b: str) -> bool:
    """DNS names compare case-insensitively in ASCII (RFC 4343)."""
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def check_response(msg: Message, qid: int, name: str, qtype: int) -> None:
    """Is ``msg`` the answer to our query? RFC 5452 section 9.1: ID and question must match."""
    if msg.qid != qid or not msg.flags & FLAG_QR:
        raise RemoteProtocolError(f"DNS reply ID {msg.qid} / QR {bool(msg.flags & FLAG_QR)} does not answer "
                                  f"query {qid}")
    if (msg.flags >> 11) & 0xF != 0:
        raise RemoteProtocolError(f"DNS reply has opcode {(msg.flags >> 11) & 0xF}, not QUERY")
    if len(msg.questions) != 1 or not same_name(msg.questions[0][0], name) \
            or msg.questions[0][1:] != (qtype, CLASS_IN):
        raise RemoteProtocolError(f"DNS reply question {msg.questions!r} is not ours ({name!r}, type {qtype})")
    if msg.flags & FLAG_TC:
        raise RemoteProtocolError(f"DNS reply for {name!r} is truncated (TC) even at {EDNS_UDP_SIZE} octets; "
                                  "TCP fallback is not implemented")
    if msg.rcode not in (RCODE_NOERROR, RCODE_NXDOMAIN):
        raise RemoteProtocolError(f"DNS server answered {name!r} with RCODE {msg.rcode}", code=msg.rcode)


def answers_for(msg: Message, name: str, qtype: int) -> list[object]:
    """The data of the answer records for ``name``/``qtype``, following a CNAME chain."""
    current = name
    for _ in range(MAX_CNAME_CHAIN):
        found = [r.data for r in msg.answers if r.rtype == qtype and r.rclass == CLASS_IN
                 and same_name(r.name, current)]
        if found:
            return found
        aliases = [r.data for r in msg.answers if r.rtype == TYPE_CNAME and same_name(r.name, current)]
        if not aliases:
            return []
        current = str(aliases[0])
    raise RemoteProtocolError(f"DNS CNAME chain from {name!r} is longer than {MAX_CNAME_CHAIN}")


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.error: OSError | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. arrive here on a connected socket.
        self.queue.put_nowait(b"")
        self.error = exc if isinstance(exc, OSError) else OSError(str(exc))


async def query(server: str, name: str, qtype: int, *, port: int = 53, timeout: float = QUERY_TIMEOUT_S,
                attempts: int = QUERY_ATTEMPTS) -> Message | None:
    """Ask ``server``; the matching reply, or None if it never came. Replies whose ID or
    question do not match are dropped (they may be spoofed or late)."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(_Receiver, remote_addr=(server, port))
    except OSError as exc:
        raise LocalDiscoveryError(f"cannot open a UDP socket to DNS server {server}:{port}: {exc}") from None
    try:
        for _ in range(attempts):
            qid = secrets.randbelow(0x10000)
            transport.sendto(build_query(qid, name, qtype))
            reply = await _await_reply(proto, qid, name, qtype, timeout)
            if reply is not None:
                return reply
        return None
    finally:
        transport.close()


async def _await_reply(proto: _Receiver, qid: int, name: str, qtype: int, timeout: float) -> Message | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            data = await asyncio.wait_for(proto.queue.get(), left)
        except TimeoutError:
            return None
        if not data:
            # ICMP unreachable on the connected socket: nobody serves DNS there.
            log.info("DNS query for %s failed: %s", name, proto.error)
            return None
        if len(data) >= 2 and int.from_bytes(data[:2], "big") != qid:
            log.debug("dropping DNS reply with foreign ID for %s", name)
            continue
        msg = parse_message(data)
        check_response(msg, qid, name, qtype)
        return msg
    return None


def sztp_txt_to_data(strings: list[bytes], owner: str) -> SignedBootstrappingData:
    """TXT strings in RFC 6763 section 6.3 key=value form -> signed bootstrapping data.

    Keys compare case-insensitively; the first occurrence of a key wins (RFC 6763 section
    6.4); strings starting with "=" are ignored (also 6.4). All three keys are required.
    """
    found: dict[str, bytes] = {}
    for s in strings:
        key, sep, value = s.partition(b"=")
        if not key:
            continue
        k = key.decode("latin-1").lower()
        if k in SZTP_TXT_KEYS and k not in found:
            if not sep or not value:
                raise RemoteProtocolError(f"DNS TXT {owner!r}: key {k!r} has no value")
            found[k] = value
    missing = sorted(set(SZTP_TXT_KEYS) - set(found))
    if missing:
        raise RemoteProtocolError(f"DNS TXT {owner!r} lacks {', '.join(missing)} (RFC 8572 section 4, DNS Server)")
    return SignedBootstrappingData(**{SZTP_TXT_KEYS[k]: v for k, v in found.items()})


def srv_to_uris(records: list[Srv], owner: str) -> list[str]:
    """SRV records -> bootstrap server URIs, by priority (lowest first), then weight
    (highest first). RFC 2782 picks by weighted lottery; we keep order deterministic."""
    uris = []
    for srv in sorted(records, key=lambda r: (r.priority, -r.weight)):
        if srv.target in ("", "."):
            continue  # RFC 2782: "." = service decidedly not available at this domain
        if srv.port == 0:
            raise RemoteProtocolError(f"DNS SRV {owner!r} -> {srv.target!r} has port 0")
        host = check_hostname(srv.target, f"DNS SRV {owner!r} target")
        uris.append(check_bootstrap_uri(f"https://{host}:{srv.port}", f"URI from DNS SRV {owner!r}"))
    return list(dict.fromkeys(uris))


def check_serial_label(serial: str) -> str:
    """The serial number becomes one DNS label: 1..63 printable ASCII octets, no dot."""
    if not serial or len(serial.encode()) > MAX_LABEL or not serial.isascii() or not serial.isprintable() \
            or "." in serial or " " in serial:
        raise LocalDiscoveryError(f"serial number {serial!r} cannot be a DNS label")
    return serial


class DnsSource:
    """RFC 8572 section 4 ("DNS Server") over unicast DNS. Name servers and domain come from the
    constructor or, if not given, from the context (the DHCP lease)."""

    name = "dns"

    def __init__(self, nameservers: list[str] | None = None, domain: str | None = None, *, port: int = 53,
                 timeout: float = QUERY_TIMEOUT_S, attempts: int = QUERY_ATTEMPTS) -> None:
        self.nameservers = nameservers
        self.domain = domain
        self.port = port
        self.timeout = timeout
        self.attempts = attempts

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]:
        servers = self.nameservers if self.nameservers is not None else ctx.nameservers
        domain = self.domain or ctx.domain
        if not servers or not domain:
            log.info("DNS discovery skipped: no %s", "name server" if not servers else "domain")
            return []
        domain = check_hostname(domain, "DNS search domain").lower()
        error: RemoteProtocolError | None = None
        for server in servers:
            try:
                found = await self._ask(server, domain, ctx.serial_number)
            except RemoteProtocolError as exc:
                log.warning("DNS server %s: %s", server, exc)
                error = exc
                continue
            if found is not None:
                return found
        if error is not None:
            raise error
        log.info("no DNS server of %s answered", servers)
        return []

    async def _ask(self, server: str, domain: str, serial: str | None) -> list[BootstrapServer] | None:
        """Device-specific TXT first, then device-independent SRV; None if the server is mute.
        A broken TXT record does not hide the SRV records, but is raised if they name nothing."""
        txt_error: RemoteProtocolError | None = None
        if serial is not None:
            name = f"{check_serial_label(serial)}.{SZTP_LABEL}.{domain}"
            msg = await query(server, name, TYPE_TXT, port=self.port, timeout=self.timeout, attempts=self.attempts)
            if msg is None:
                return None
            txts = answers_for(msg, name, TYPE_TXT)
            if txts:
                strings = [s for t in txts if isinstance(t, tuple) for s in t]
                try:
                    data = sztp_txt_to_data(strings, name)
                except RemoteProtocolError as exc:
                    log.warning("%s; trying the device-independent SRV records", exc)
                    txt_error = exc
                else:
                    return [BootstrapServer(f"dns://{_authority(server, self.port)}/{name}?type=TXT", self.name,
                                            inline=data)]
        name = f"{SZTP_LABEL}.{domain}"
        msg = await query(server, name, TYPE_SRV, port=self.port, timeout=self.timeout, attempts=self.attempts)
        if msg is None:
            return None
        srvs = [s for s in answers_for(msg, name, TYPE_SRV) if isinstance(s, Srv)]
        found = [BootstrapServer(uri, self.name) for uri in srv_to_uris(srvs, name)]
        if not found and txt_error is not None:
            raise txt_error
        return found


def _authority(server: str, port: int) -> str:
    host = f"[{server}]" if ":" in server else server
    return host if port == 53 else f"{host}:{port}"

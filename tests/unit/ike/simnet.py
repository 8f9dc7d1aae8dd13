"""Two IKE state machines wired together in memory, with a hand-driven clock.

Delivers Send commands to the other side, keeps timers, and applies child SA
commands to real ESP SAs, so a test can check that traffic flows with the keys.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ipsec.esp import InboundSA, OutboundSA
from ipsec.ike import events as ev
from ipsec.ike.policy import Identity, PeerPolicy, Timers
from ipsec.ike.sa import IkeSa

A_ADDR, B_ADDR = ("198.18.1.2", 500), ("198.18.2.2", 500)
A_TS, B_TS = IPv4Network("198.19.255.1/32"), IPv4Network("198.19.255.2/32")


def psk_policies(**kw) -> tuple[PeerPolicy, PeerPolicy]:
    a = PeerPolicy("b", Identity.address("198.19.255.1"), Identity.address("198.19.255.2"), A_TS, B_TS,
                   psk=b"lab secret", **kw)
    b = PeerPolicy("a", Identity.address("198.19.255.2"), Identity.address("198.19.255.1"), B_TS, A_TS,
                   psk=b"lab secret", **kw)
    return a, b


def make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=nsg test CA")
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            # RFC 5280 4.2.1.3: a CA certificate says it signs certificates (the verifier insists)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca, ip: str, key=None):
    ca_key, ca_cert = ca
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={ip}"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def ldevid(ca, ip: str, serial: str):
    """A gateway's LDevID: subject serialNumber = its device serial, SAN = its system IP. Each call
    is a new certificate with a new key (a renewal), same subject and SAN."""
    import ipaddress

    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
                                     x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def cert_policies(ca=None, b_ca=None, **kw) -> tuple[PeerPolicy, PeerPolicy]:
    ca = ca or make_ca()
    b_ca = b_ca or ca
    ka, ca_a = issue(ca, "198.19.255.1")
    kb, cb = issue(b_ca, "198.19.255.2")
    a = PeerPolicy("b", Identity.address("198.19.255.1"), Identity.address("198.19.255.2"), A_TS, B_TS,
                   key=ka, cert=ca_a, cas=(ca[1],), **kw)
    b = PeerPolicy("a", Identity.address("198.19.255.2"), Identity.address("198.19.255.1"), B_TS, A_TS,
                   key=kb, cert=cb, cas=(ca[1],), **kw)
    return a, b


@dataclass
class Side:
    name: str
    addr: ev.Address
    sa: IkeSa | None = None
    timers: dict[str, float] = field(default_factory=dict)
    inbound: dict[int, InboundSA] = field(default_factory=dict)
    outbound: OutboundSA | None = None
    installed: dict[int, ev.ChildSa] = field(default_factory=dict)
    events: list = field(default_factory=list)


class SimNet:
    def __init__(self, pa: PeerPolicy, pb: PeerPolicy, *, timers: Timers | None = None):
        self.now = 0.0
        self.a = Side("a", A_ADDR)
        self.b = Side("b", B_ADDR)
        self.a.sa = IkeSa(pa, A_ADDR, B_ADDR, initiator=True)
        self.pb = pb
        self.wire: list[tuple[Side, bytes, ev.Address, int]] = []
        self.drop_next = 0  # drop this many datagrams
        self.sent = 0

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def apply(self, side: Side, cmds: list[ev.Command]) -> None:
        for c in cmds:
            side.events.append(c)
            match c:
                case ev.Send(data, _peer, port):
                    self.sent += 1
                    if self.drop_next:
                        self.drop_next -= 1
                        continue
                    src = (side.addr[0], port)
                    self.wire.append((self.other(side), data, src, port))
                case ev.SetTimer(name, delay):
                    side.timers[name] = self.now + delay
                case ev.CancelTimer(name):
                    side.timers.pop(name, None)
                case ev.InstallChild(child, outbound):
                    side.installed[child.child_id] = child
                    side.inbound[child.in_spi] = InboundSA(child.in_spi, child.in_key[:-4], child.in_key[-4:],
                                                           child.esn)
                    if outbound:
                        side.outbound = OutboundSA(child.out_spi, child.out_key[:-4], child.out_key[-4:], child.esn)
                case ev.ActivateChild(cid):
                    child = side.installed[cid]
                    side.outbound = OutboundSA(child.out_spi, child.out_key[:-4], child.out_key[-4:], child.esn)
                case ev.RemoveChild(_cid, in_spi, _out):
                    side.inbound.pop(in_spi, None)

    def deliver(self, limit: int = 200) -> None:
        for _ in range(limit):
            if not self.wire:
                return
            dst, data, src, port = self.wire.pop(0)
            from ipsec.ike.message import Header
            from ipsec.ike.sa import State

            h = Header.decode(data)
            fresh = h.exchange == 34 and not h.flags & 0x20 and h.spi_r == bytes(8)
            if dst.sa is None or (fresh and dst.sa.state is State.CLOSED):
                # a responder comes to life on an IKE_SA_INIT request (as the manager does it)
                dst.sa = IkeSa(self.pb, dst.addr, src, initiator=False, peer_spi=h.spi_i)
            self.apply(dst, dst.sa.receive(data, src, port))
        raise AssertionError("message storm")

    def start(self) -> None:
        self.apply(self.a, self.a.sa.initiate())
        self.deliver()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [(t, side, name) for side in (self.a, self.b) for name, t in side.timers.items() if t <= end]
            if not due:
                break
            t, side, name = min(due, key=lambda x: x[0])
            self.now = max(self.now, t)
            del side.timers[name]
            self.apply(side, side.sa.timer(name))
            self.deliver()
        self.now = end

    def ping(self, frm: Side) -> bool:
        """One inner packet through the current outbound SA of frm, opened by the other side."""
        to = self.other(frm)
        if frm.outbound is None:
            return False
        pkt = frm.outbound.seal(b"\x45" + bytes(19) + b"ping")
        spi = int.from_bytes(pkt[:4], "big")
        sa = to.inbound.get(spi)
        if sa is None:
            return False
        return sa.open(pkt)[1].endswith(b"ping")

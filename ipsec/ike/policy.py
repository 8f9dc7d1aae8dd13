"""What one IKE peering may negotiate: proposals, identities, credentials, selectors, timers.

Proposal selection (RFC 7296 2.7, 3.3.6) is pure and lives here; the state
machine in ike/sa.py asks these functions and builds payloads from the answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from cryptography import x509

from ipsec.ike.constants import DhGroup, EncrId, EsnId, IdType, NotifyType, PrfId, ProtocolId, TransformType
from ipsec.ike.crypto import PrivateKey
from ipsec.ike.errors import LocalProtocolError, RemoteProtocolError
from ipsec.ike.payloads import SA, IdPayload, Proposal, TrafficSelector, Transform


@dataclass(frozen=True)
class IkeProposal:
    encr_bits: int = 128  # AES-GCM-16 key length
    prf: int = PrfId.HMAC_SHA2_256
    dh: int = DhGroup.ECP_256

    def transforms(self) -> tuple[Transform, ...]:
        return (
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, self.encr_bits),
            Transform(TransformType.PRF, self.prf),
            Transform(TransformType.DH, self.dh),
        )


@dataclass(frozen=True)
class EspProposal:
    encr_bits: int = 128
    esn: bool = False
    dh: int = DhGroup.NONE  # PFS group for CREATE_CHILD_SA; NONE in IKE_AUTH (RFC 7296 1.2)

    def transforms(self, with_dh: bool) -> tuple[Transform, ...]:
        out = [
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, self.encr_bits),
            Transform(TransformType.ESN, EsnId.ESN if self.esn else EsnId.NO_ESN),
        ]
        if with_dh and self.dh != DhGroup.NONE:
            out.append(Transform(TransformType.DH, self.dh))
        return tuple(out)


@dataclass(frozen=True)
class Identity:
    id_type: int
    data: bytes

    @classmethod
    def address(cls, addr: str) -> Identity:
        return cls(IdType.IPV4_ADDR, IPv4Address(addr).packed)

    @classmethod
    def fqdn(cls, name: str) -> Identity:
        return cls(IdType.FQDN, name.encode("ascii"))

    def matches(self, payload: IdPayload) -> bool:
        return payload.id_type == self.id_type and payload.data == self.data

    def __str__(self) -> str:
        if self.id_type == IdType.IPV4_ADDR and len(self.data) == 4:
            return str(IPv4Address(self.data))
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        return f"id{self.id_type}:{self.data.hex()}"


@dataclass(frozen=True)
class Timers:
    retransmit: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)  # then give up (RFC 7296 2.1)
    ike_rekey_s: float = 4 * 3600.0
    child_rekey_s: float = 3600.0
    rekey_jitter: float = 0.1  # rekey a little early, randomly, so both ends rarely collide (2.8.1)
    dpd_s: float = 30.0  # liveness check when nothing came from the peer (2.4)
    old_child_linger_s: float = 5.0  # keep an old inbound SA after rekey for packets in flight
    keepalive_s: float = 20.0  # NAT keepalive (RFC 3948 4)


@dataclass(frozen=True)
class PeerPolicy:
    name: str
    local_id: Identity
    remote_id: Identity | None  # None: whoever authenticates (certificate auth only)
    local_ts: IPv4Network
    remote_ts: IPv4Network
    psk: bytes | None = field(default=None, repr=False)
    key: PrivateKey | None = field(default=None, repr=False)
    cert: x509.Certificate | None = None
    cas: tuple[x509.Certificate, ...] = ()
    # Certificate auth: the subject serialNumber the peer's certificate must carry (its device serial:
    # the certificate issued for *that* peer, not any the CA issued), and serial numbers of revoked
    # certificates (from a CRL the caller verified).
    remote_serial: str | None = None
    revoked: frozenset[int] = frozenset()
    ike: tuple[IkeProposal, ...] = (IkeProposal(),)
    esp: tuple[EspProposal, ...] = (EspProposal(),)
    timers: Timers = Timers()
    force_encap: bool = True  # always ESP-in-UDP (our userspace engine has no raw ESP)

    def __post_init__(self) -> None:
        if (self.psk is None) == (self.key is None):
            raise LocalProtocolError(f"peer {self.name}: give either a PSK or a private key with a certificate")
        if self.key is not None and (self.cert is None or not self.cas):
            raise LocalProtocolError(f"peer {self.name}: certificate auth needs a certificate and CA certificates")
        if self.remote_id is None and self.psk is not None:
            raise LocalProtocolError(f"peer {self.name}: PSK auth needs the peer's identity")
        if not self.ike or not self.esp:
            raise LocalProtocolError(f"peer {self.name}: no proposals")


def ike_sa_payload(proposals: tuple[IkeProposal, ...], spi: bytes = b"") -> SA:
    """SPI empty in IKE_SA_INIT (3.3.1); the new initiator SPI when rekeying the IKE SA."""
    return SA(tuple(Proposal(i + 1, ProtocolId.IKE, spi, p.transforms()) for i, p in enumerate(proposals)))


def esp_sa_payload(proposals: tuple[EspProposal, ...], spi: bytes, with_dh: bool) -> SA:
    return SA(tuple(Proposal(i + 1, ProtocolId.ESP, spi, p.transforms(with_dh)) for i, p in enumerate(proposals)))


def _no_proposal(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"no acceptable {what} proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)


def _single(proposal: Proposal, ttype: int) -> Transform | None:
    found = proposal.of_type(ttype)
    return found[0] if found else None


def choose_ike(offer: SA, ours: tuple[IkeProposal, ...]) -> tuple[Proposal, IkeProposal]:
    """Responder: our first preference the peer offers; returns the one-transform-per-type
    proposal to send back (3.3.6) and what it means."""
    for mine in ours:
        for p in offer.proposals:
            if p.protocol_id != ProtocolId.IKE:
                continue
            wanted = mine.transforms()
            if all(any(_same(t, w) for t in p.transforms) for w in wanted):
                return Proposal(p.number, ProtocolId.IKE, p.spi, wanted), mine
    raise _no_proposal("IKE")


def choose_esp(offer: SA, ours: tuple[EspProposal, ...], with_dh: bool) -> tuple[Proposal, EspProposal]:
    for mine in ours:
        for p in offer.proposals:
            if p.protocol_id != ProtocolId.ESP or len(p.spi) != 4:
                continue
            wanted = mine.transforms(with_dh)
            offered_dh = _single(p, TransformType.DH)
            if not with_dh and offered_dh is not None and offered_dh.transform_id != DhGroup.NONE:
                continue
            if all(any(_same(t, w) for t in p.transforms) for w in wanted):
                return Proposal(p.number, ProtocolId.ESP, p.spi, wanted), mine
    raise _no_proposal("ESP")


def accept_ike(reply: SA, ours: tuple[IkeProposal, ...]) -> IkeProposal:
    """Initiator: the responder must pick exactly one of what we offered (2.7)."""
    if len(reply.proposals) != 1:
        raise RemoteProtocolError("responder returned more than one IKE proposal", notify=NotifyType.INVALID_SYNTAX)
    p = reply.proposals[0]
    for mine in ours:
        if p.protocol_id == ProtocolId.IKE and _exactly(p.transforms, mine.transforms()):
            return mine
    raise _no_proposal("IKE (responder chose something we did not offer)")


def accept_esp(reply: SA, ours: tuple[EspProposal, ...], with_dh: bool) -> tuple[EspProposal, bytes]:
    if len(reply.proposals) != 1:
        raise RemoteProtocolError("responder returned more than one ESP proposal", notify=NotifyType.INVALID_SYNTAX)
    p = reply.proposals[0]
    if p.protocol_id != ProtocolId.ESP or len(p.spi) != 4:
        raise RemoteProtocolError("ESP proposal without a 4-octet SPI", notify=NotifyType.INVALID_SYNTAX)
    for mine in ours:
        if _exactly(p.transforms, mine.transforms(with_dh)):
            return mine, p.spi
    raise _no_proposal("ESP (responder chose something we did not offer)")


def _same(a: Transform, b: Transform) -> bool:
    return (a.transform_type, a.transform_id, a.key_length) == (b.transform_type, b.transform_id, b.key_length)


def _exactly(got: tuple[Transform, ...], want: tuple[Transform, ...]) -> bool:
    key = lambda t: (t.transform_type, t.transform_id, t.key_length or 0)  # noqa: E731
    return sorted(map(key, got)) == sorted(map(key, want))


def ts_acceptable(offered: tuple, mine: IPv4Network) -> bool:
    """Our selector must lie within what the peer proposes (we narrow to it, 2.9)."""
    return any(
        isinstance(s, TrafficSelector) and s.start.version == 4
        and int(s.start) <= int(mine.network_address) and int(mine.broadcast_address) <= int(s.end)
        for s in offered
    )


def ts_of(net: IPv4Network) -> TrafficSelector:
    return TrafficSelector.for_network(net)

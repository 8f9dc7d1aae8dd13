"""The IKEv2 exchanges: IKE_SA_INIT and IKE_AUTH (RFC 7296 1.2), CREATE_CHILD_SA for child and
IKE SA rekeys (1.3.2, 1.3.3). Pure: everything leaves as commands.

These functions build and check messages and derive keys. They see the IKE SA only through
``Host`` below (sa.py's IkeSa is one) and never import sa.py: the SA owns its state tables and
the dispatch of requests, and moves its states by the events named here (``go``, ``child_go``).
What IKE_SA_INIT leaves for IKE_AUTH is typed: ``InitOffer`` while the initiator's request is
out (with the COOKIE and retries of 2.6 and 1.2), then ``Handshake`` in either role.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Protocol

from ipsec.ike import crypto
from ipsec.ike import events as ev
from ipsec.ike.auth import HASHES_WE_SIGN_WITH, check_peer, our_auth, our_certreqs, our_certs, peer_cert_serial
from ipsec.ike.constants import DhGroup, ExchangeType, NotifyType, ProtocolId
from ipsec.ike.context import ZERO_SPI, Ctx, ResponseHandler
from ipsec.ike.errors import IkeError, RemoteProtocolError
from ipsec.ike.message import Message
from ipsec.ike.payloads import (
    KE,
    SA,
    Auth,
    Cert,
    Delete,
    IDi,
    IdPayload,
    IDr,
    Nonce,
    Notify,
    Payload,
    Proposal,
    TSi,
    TSr,
)
from ipsec.ike.policy import (
    EspProposal,
    IkeProposal,
    PeerPolicy,
    accept_esp,
    accept_ike,
    choose_esp,
    choose_ike,
    esp_sa_payload,
    ike_sa_payload,
    ts_acceptable,
    ts_of,
)

After = list[Callable[[], None]]
MAX_INIT_RETRIES = 3  # tuning: COOKIE / INVALID_KE_PAYLOAD round trips before we give up


@dataclass(frozen=True)
class InitOffer:
    """The initiator's IKE_SA_INIT while it is out (1.2). Sent again, with the responder's COOKIE
    first (2.6) or a KE in the group it asked for (1.2), it keeps its nonce: a cookie is computed
    over Ni."""

    ni: bytes = field(repr=False)
    dh: crypto.DhPrivate = field(repr=False)
    cookie: bytes | None = None
    retries: int = 0  # COOKIE and INVALID_KE_PAYLOAD answers so far
    request: bytes = field(default=b"", repr=False)  # the request as last sent (signed in IKE_AUTH, 2.15)


@dataclass(frozen=True)
class Handshake:
    """What IKE_SA_INIT leaves for IKE_AUTH, in either role: both messages byte for byte and both
    nonces, which the AUTH payloads sign (2.15), and the IKE proposal agreed."""

    request: bytes = field(repr=False)
    ni: bytes = field(repr=False)
    nr: bytes = field(repr=False)
    proposal: IkeProposal
    # the responder's answer: sa.py encodes it after answer_init returns, and fills it in then
    response: bytes = field(default=b"", repr=False)


class Host(Protocol):
    """What the exchanges need of an IKE SA (sa.py's IkeSa)."""

    policy: PeerPolicy
    local: ev.Address
    peer: ev.Address
    local_port: int
    ctx: Ctx
    retiring: Ctx | None
    nat_local: bool
    nat_remote: bool
    remote_id: str
    peer_cert_serial: int | None
    rebind: Callable[[IdPayload], PeerPolicy | None] | None
    counters: dict[str, int]
    rng: Callable[[int], bytes]
    clock: Callable[[], datetime.datetime]
    jitter: Callable[[], float]
    offer: InitOffer | None
    handshake: Handshake | None

    def go(self, event: str) -> None: ...
    def child_go(self, cid: int, event: str) -> None: ...
    def emit(self, cmd: ev.Command) -> None: ...
    def request(self, ctx: Ctx, exchange: int, payloads: tuple[Payload, ...], on_response: ResponseHandler,
                what: str) -> None: ...
    def send_init(self, ctx: Ctx, payloads: tuple[Payload, ...], on_response: ResponseHandler) -> bytes: ...
    def new_ike_spi(self) -> bytes: ...
    def new_child_spi(self) -> bytes: ...
    def nonce(self) -> bytes: ...
    def child_id(self) -> int: ...
    def add_child(self, child: ev.ChildSa, outbound: bool, replaces: int | None) -> None: ...
    def child_by_out_spi(self, spi: int) -> int | None: ...
    def child_is_live(self, cid: int) -> bool: ...
    def delete_child(self, cid: int) -> None: ...
    def drop_retiring(self) -> None: ...
    def rekey_delay(self, base: float) -> float: ...
    def established_timers(self) -> None: ...
    def error_notify(self, msg: Message) -> Notify | None: ...
    def close(self, reason: str = ...) -> list[ev.Command]: ...


def _syntax(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(why, notify=NotifyType.INVALID_SYNTAX)


def _need(msg: Message, cls: type, what: str):
    p = msg.get(cls)
    if p is None:
        raise _syntax(f"{ExchangeType(msg.exchange).name} without {what}")
    return p


def _nat_hash(spi_i: bytes, spi_r: bytes, addr: ev.Address) -> bytes:
    return crypto.nat_detection_hash(spi_i, spi_r, IPv4Address(addr[0]), addr[1])


def _nat_notifies(sa: Host, spi_i: bytes, spi_r: bytes, dst: ev.Address) -> tuple[Notify, Notify]:
    # With forced encapsulation we claim a source that cannot match, so the peer
    # believes we sit behind a NAT and puts ESP in UDP (what strongSwan's encap=yes does).
    src = sa.rng(20) if sa.policy.force_encap else _nat_hash(spi_i, spi_r, sa.local)
    return (Notify(NotifyType.NAT_DETECTION_SOURCE_IP, src),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, _nat_hash(spi_i, spi_r, dst)))


def _detect_nat(sa: Host, msg: Message, spi_i: bytes, spi_r: bytes, peer: ev.Address) -> None:
    srcs = [n.data for n in msg.all(Notify) if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
    dst = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    if not srcs or dst is None:
        if sa.policy.force_encap:
            raise RemoteProtocolError("peer does not support NAT traversal; ESP must travel in UDP (RFC 3948)",
                                      notify=NotifyType.NO_PROPOSAL_CHOSEN)
        return
    sa.nat_remote = _nat_hash(spi_i, spi_r, peer) not in srcs
    sa.nat_local = dst.data != _nat_hash(spi_i, spi_r, sa.local)


def _signature_notify(sa: Host) -> tuple[Notify, ...]:
    if sa.policy.key is None:
        return ()
    return (Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, crypto.encode_hash_algorithms(HASHES_WE_SIGN_WITH)),)


def _derive_ike(ctx: Ctx, prop: IkeProposal, seed: bytes, ni: bytes, nr: bytes) -> None:
    prf = crypto.prf_for(prop.prf)
    keys = crypto.ike_sa_keys(prf, seed, ni, nr, ctx.spi_i, ctx.spi_r, crypto.aes_gcm_keymat_len(prop.encr_bits))
    ctx.set_keys(prf, keys)


def _ke(msg: Message, group: int) -> KE:
    ke = _need(msg, KE, "KE")
    if ke.group != group:
        raise RemoteProtocolError(f"KE for group {ke.group}, expected {group}",
                                  notify=NotifyType.INVALID_KE_PAYLOAD, notify_data=group.to_bytes(2, "big"))
    return ke


# --- initiator: IKE_SA_INIT -------------------------------------------------------------


def start_init(sa: Host, offer: InitOffer | None = None) -> None:
    """Send our IKE_SA_INIT request; ``offer``: send it again, as the responder asked."""
    props = sa.policy.ike
    if offer is None:
        offer = InitOffer(sa.nonce(), crypto.dh_generate(props[0].dh))
    payloads: list[Payload] = []
    if offer.cookie is not None:
        payloads.append(Notify(NotifyType.COOKIE, offer.cookie))  # first, as 2.6 requires
    payloads += [ike_sa_payload(props), KE(offer.dh.group, offer.dh.public_bytes()), Nonce(offer.ni),
                 *_nat_notifies(sa, sa.ctx.spi_i, ZERO_SPI, sa.peer), *_signature_notify(sa)]
    sent = sa.send_init(sa.ctx, tuple(payloads), lambda c, m, raw: _init_response(sa, c, m, raw))
    sa.offer = replace(offer, request=sent)


def _init_response(sa: Host, ctx: Ctx, msg: Message, raw: bytes) -> None:
    offer = sa.offer
    assert offer is not None
    cookie = msg.notify(NotifyType.COOKIE)
    if cookie is not None:
        if offer.retries >= MAX_INIT_RETRIES or not 1 <= len(cookie.data) <= 64:
            raise RemoteProtocolError("responder keeps asking for cookies")
        sa.go("init_retry")
        start_init(sa, replace(offer, dh=crypto.dh_generate(offer.dh.group), cookie=cookie.data,
                               retries=offer.retries + 1))
        return
    bad_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
    if bad_ke is not None:
        group = int.from_bytes(bad_ke.data[:2], "big")
        offered = [p.dh for p in sa.policy.ike]
        if group == offer.dh.group:
            # 1.2: the notify names the group the responder wants; it wants the one we used
            raise RemoteProtocolError(f"responder answered INVALID_KE_PAYLOAD naming DH group {group}, but our KE "
                                      f"was in that group already (the responder contradicts itself)")
        if group not in offered:
            raise RemoteProtocolError(f"responder wants DH group {group}, which we do not offer "
                                      f"(we offer {', '.join(map(str, dict.fromkeys(offered)))})")
        if offer.retries >= MAX_INIT_RETRIES:
            raise RemoteProtocolError(f"responder still refuses our KE after {offer.retries} retries (now it wants "
                                      f"DH group {group})")
        sa.go("init_retry")
        start_init(sa, replace(offer, dh=crypto.dh_generate(group), retries=offer.retries + 1))
        return
    err = sa.error_notify(msg)
    if err is not None:
        raise RemoteProtocolError(f"responder refused IKE_SA_INIT: {notify_name(err)}")
    if msg.spi_r == ZERO_SPI:
        raise _syntax("IKE_SA_INIT response without a responder SPI")
    prop = accept_ike(_need(msg, SA, "SA"), sa.policy.ike)
    ke = _ke(msg, prop.dh)
    if offer.dh.group != prop.dh:
        raise RemoteProtocolError("responder chose a DH group other than our KE's")
    nr = _need(msg, Nonce, "Nonce").data
    ctx.spi_r = msg.spi_r
    _detect_nat(sa, msg, ctx.spi_i, ctx.spi_r, sa.peer)
    shared = offer.dh.shared_secret(ke.data)
    _derive_ike(ctx, prop, crypto.skeyseed(crypto.prf_for(prop.prf), offer.ni, nr, shared), offer.ni, nr)
    # IKE_AUTH signs the response byte for byte as it came (2.15)
    sa.offer, sa.handshake = None, Handshake(offer.request, offer.ni, nr, prop, response=raw)
    if sa.nat_local or sa.nat_remote or sa.policy.force_encap:
        sa.local_port, sa.peer = 4500, (sa.peer[0], 4500)  # 2.23: on to the NAT-T port
    sa.go("init_done")
    _send_auth(sa, ctx)


def _send_auth(sa: Host, ctx: Ctx) -> None:
    assert ctx.prf is not None and ctx.keys is not None and sa.handshake is not None
    p = sa.policy
    idi = IDi(p.local_id.id_type, p.local_id.data)
    octets = crypto.signed_octets(sa.handshake.request, sa.handshake.nr, ctx.prf, ctx.keys.sk_pi, idi.encode())
    spi = sa.new_child_spi()
    payloads: list[Payload] = [idi, *our_certs(p), *our_certreqs(p)]  # 1.2: IDi, [CERT,] [CERTREQ,] [IDr,] AUTH
    if p.remote_id is not None:
        payloads.append(IDr(p.remote_id.id_type, p.remote_id.data))
    payloads += [our_auth(p, ctx.prf, octets), esp_sa_payload(p.esp, spi, with_dh=False),
                 TSi((ts_of(p.local_ts),)), TSr((ts_of(p.remote_ts),))]
    sa.request(ctx, ExchangeType.IKE_AUTH, tuple(payloads), lambda c, m, _raw: _auth_response(sa, c, m, spi),
               "IKE_AUTH")


def _auth_response(sa: Host, ctx: Ctx, msg: Message, child_spi: bytes) -> None:
    hs = sa.handshake
    assert ctx.prf is not None and ctx.keys is not None and hs is not None
    idr = msg.get(IDr)
    if idr is None or msg.get(Auth) is None:
        err = sa.error_notify(msg)
        raise RemoteProtocolError(f"peer refused IKE_AUTH: {notify_name(err) if err else 'no AUTH'}")
    octets = crypto.signed_octets(hs.response, hs.ni, ctx.prf, ctx.keys.sk_pr, idr.encode())
    sa.remote_id = check_peer(sa.policy, ctx.prf, octets, idr, msg.get(Auth), msg.all(Cert), sa.clock())
    sa.peer_cert_serial = peer_cert_serial(msg.all(Cert)) if sa.policy.psk is None else None
    sa.go("auth_done")
    sa.handshake = None
    _established(sa)
    reply_sa = msg.get(SA)
    if reply_sa is None:
        err = sa.error_notify(msg)
        sa.close(f"peer refused the child SA: {notify_name(err) if err else 'no SA'}")
        return
    esp, peer_spi = accept_esp(reply_sa, sa.policy.esp, with_dh=False)
    _check_ts(sa, msg, initiator=True)
    _install(sa, ctx, esp, child_spi, peer_spi, hs.ni, hs.nr, b"", we_initiated=True)


def _established(sa: Host, rekeyed: bool = False) -> None:
    ctx = sa.ctx
    local, remote = (ctx.spi_i, ctx.spi_r) if ctx.initiator else (ctx.spi_r, ctx.spi_i)
    sa.emit(ev.Established(local, remote, sa.peer, sa.nat_local, sa.nat_remote, sa.remote_id, rekeyed))
    if not rekeyed:
        sa.established_timers()


def _check_ts(sa: Host, msg: Message, initiator: bool) -> None:
    tsi, tsr = _need(msg, TSi, "TSi"), _need(msg, TSr, "TSr")
    mine, theirs = (tsi, tsr) if initiator else (tsr, tsi)
    if not (ts_acceptable(mine.selectors, sa.policy.local_ts) and ts_acceptable(theirs.selectors, sa.policy.remote_ts)):
        raise RemoteProtocolError(f"traffic selectors do not cover {sa.policy.local_ts} <-> {sa.policy.remote_ts}",
                                  notify=NotifyType.TS_UNACCEPTABLE)


def _install(sa: Host, ctx: Ctx, esp: EspProposal, our_spi: bytes, peer_spi: bytes, ni: bytes, nr: bytes,
             shared: bytes, we_initiated: bool, outbound: bool = True, replaces: int | None = None) -> int:
    assert ctx.prf is not None and ctx.keys is not None
    km = crypto.child_sa_keys(ctx.prf, ctx.keys.sk_d, ni, nr, crypto.aes_gcm_keymat_len(esp.encr_bits),
                              shared_secret=shared)
    in_key, out_key = (km.encr_r, km.encr_i) if we_initiated else (km.encr_i, km.encr_r)
    cid = sa.child_id()
    child = ev.ChildSa(cid, int.from_bytes(our_spi, "big"), int.from_bytes(peer_spi, "big"), in_key, out_key,
                       esp.esn, sa.policy.local_ts, sa.policy.remote_ts, sa.peer)
    sa.add_child(child, outbound, replaces)
    return cid


# --- responder (sa.py dispatches the requests) ----------------------------------------------


def answer_init(sa: Host, ctx: Ctx, msg: Message, src: ev.Address, data: bytes) -> tuple[Payload, ...]:
    reply_prop, prop = choose_ike(_need(msg, SA, "SA"), sa.policy.ike)
    ke = _ke(msg, prop.dh)
    ni = _need(msg, Nonce, "Nonce").data
    sa.peer = src
    _detect_nat(sa, msg, msg.spi_i, ZERO_SPI, src)
    ctx.spi_r = sa.new_ike_spi()
    dh = crypto.dh_generate(prop.dh)
    shared = dh.shared_secret(ke.data)
    nr = sa.nonce()
    _derive_ike(ctx, prop, crypto.skeyseed(crypto.prf_for(prop.prf), ni, nr, shared), ni, nr)
    sa.handshake = Handshake(data, ni, nr, prop)
    sa.go("init_answered")
    return (SA((reply_prop,)), KE(prop.dh, dh.public_bytes()), Nonce(nr), *our_certreqs(sa.policy),
            *_nat_notifies(sa, ctx.spi_i, ctx.spi_r, src), *_signature_notify(sa))


def answer_auth(sa: Host, ctx: Ctx, msg: Message, src: ev.Address) -> tuple[Payload, ...]:
    hs = sa.handshake
    assert ctx.prf is not None and ctx.keys is not None and hs is not None
    idi = _need(msg, IDi, "IDi")
    if sa.rebind is not None and sa.policy.remote_id is not None and not sa.policy.remote_id.matches(idi):
        # the provisional peering chosen at IKE_SA_INIT was another one: take the identity's own, if
        # it accepts the IKE proposal already agreed (authentication below still decides)
        other = sa.rebind(idi)
        if other is not None and hs.proposal in other.ike:
            sa.policy = other
    octets = crypto.signed_octets(hs.request, hs.nr, ctx.prf, ctx.keys.sk_pi, idi.encode())
    sa.remote_id = check_peer(sa.policy, ctx.prf, octets, idi, msg.get(Auth), msg.all(Cert), sa.clock())
    sa.peer_cert_serial = peer_cert_serial(msg.all(Cert)) if sa.policy.psk is None else None
    sa.peer = src  # IKE_AUTH arrived on the port the initiator moved to (4500 after NAT detection)
    p = sa.policy
    idr = IDr(p.local_id.id_type, p.local_id.data)
    mine = crypto.signed_octets(hs.response, hs.ni, ctx.prf, ctx.keys.sk_pr, idr.encode())
    head: tuple[Payload, ...] = (idr, *our_certs(p), our_auth(p, ctx.prf, mine))
    sa.go("auth_answered")
    sa.handshake = None
    _established(sa)
    try:
        reply_prop, esp = choose_esp(_need(msg, SA, "SA"), p.esp, with_dh=False)
        _check_ts(sa, msg, initiator=False)
    except IkeError as exc:
        # The IKE SA stands; only the child failed (2.21.3): say why, and let the initiator decide.
        return (*head, Notify(exc.notify or NotifyType.NO_PROPOSAL_CHOSEN))
    our_spi = sa.new_child_spi()
    _install(sa, ctx, esp, our_spi, reply_prop.spi, hs.ni, hs.nr, b"", we_initiated=False)
    return (*head, SA((Proposal(reply_prop.number, ProtocolId.ESP, our_spi, reply_prop.transforms),)),
            TSi((ts_of(p.remote_ts),)), TSr((ts_of(p.local_ts),)))


# --- CREATE_CHILD_SA ---------------------------------------------------------------------


def start_child_rekey(sa: Host, cid: int, old: ev.ChildSa) -> None:
    """Replace child ``cid`` (1.3.3); sa.py moved it to REKEYING."""
    esp = sa.policy.esp
    pfs = esp[0].dh
    new_spi, ni = sa.new_child_spi(), sa.nonce()
    dh = crypto.dh_generate(pfs) if pfs != DhGroup.NONE else None
    payloads: list[Payload] = [
        Notify(NotifyType.REKEY_SA, protocol_id=ProtocolId.ESP, spi=old.in_spi.to_bytes(4, "big")),
        esp_sa_payload(esp, new_spi, with_dh=True), Nonce(ni)]
    if dh is not None:
        payloads.append(KE(pfs, dh.public_bytes()))
    payloads += [TSi((ts_of(sa.policy.local_ts),)), TSr((ts_of(sa.policy.remote_ts),))]

    def done(ctx: Ctx, msg: Message, _raw: bytes) -> None:
        if msg.get(SA) is None:
            sa.child_go(cid, "rekey_failed")
            err = sa.error_notify(msg)
            # TEMPORARY_FAILURE: the peer is busy with its own rekey (2.25); try again soon
            sa.emit(ev.SetTimer(f"rekey_child:{cid}", 2.0 + 3.0 * sa.jitter()))
            if err is None or err.notify_type not in (NotifyType.TEMPORARY_FAILURE, NotifyType.CHILD_SA_NOT_FOUND):
                raise RemoteProtocolError(f"peer refused the child rekey: {notify_name(err) if err else 'no SA'}")
            return
        prop, peer_spi = accept_esp(msg.get(SA), esp, with_dh=True)
        shared = b""
        if dh is not None:
            shared = dh.shared_secret(_ke(msg, pfs).data)
        _check_ts(sa, msg, initiator=True)
        nr = _need(msg, Nonce, "Nonce").data
        _install(sa, ctx, prop, new_spi, peer_spi, ni, nr, shared, we_initiated=True, replaces=cid)
        sa.counters["child_rekeys"] += 1
        sa.delete_child(cid)

    sa.request(sa.ctx, ExchangeType.CREATE_CHILD_SA, tuple(payloads), done, f"rekey of child {cid}")


def start_ike_rekey(sa: Host) -> None:
    """Replace the IKE SA (1.3.2, 2.18); sa.py moved it to REKEYING."""
    props = sa.policy.ike
    new_spi_i, ni = sa.new_ike_spi(), sa.nonce()
    dh = crypto.dh_generate(props[0].dh)
    old = sa.ctx

    def done(ctx: Ctx, msg: Message, _raw: bytes) -> None:
        reply = msg.get(SA)
        if reply is None:
            sa.go("rekey_refused")
            sa.emit(ev.SetTimer("rekey_ike", 2.0 + 3.0 * sa.jitter()))
            err = sa.error_notify(msg)
            if err is None or err.notify_type != NotifyType.TEMPORARY_FAILURE:
                raise RemoteProtocolError(f"peer refused the IKE SA rekey: {notify_name(err) if err else 'no SA'}")
            return
        prop = accept_ike(reply, props)
        spi_r = reply.proposals[0].spi
        if len(spi_r) != 8 or spi_r == ZERO_SPI:
            raise _syntax("IKE rekey response without an 8-octet SPI")
        shared = dh.shared_secret(_ke(msg, prop.dh).data)
        nr = _need(msg, Nonce, "Nonce").data
        _swap_ike(sa, old, prop, new_spi_i, spi_r, True, ni, nr, shared)
        sa.counters["ike_rekeys"] += 1
        # 2.18: the rekey's initiator deletes the old IKE SA
        sa.request(old, ExchangeType.INFORMATIONAL, (Delete(ProtocolId.IKE),),
                   lambda _c, _m, _r: sa.drop_retiring(), "delete of the old IKE SA")

    sa.request(old, ExchangeType.CREATE_CHILD_SA,
               (ike_sa_payload(props, new_spi_i), Nonce(ni), KE(props[0].dh, dh.public_bytes())), done,
               "IKE SA rekey")


def _swap_ike(sa: Host, old: Ctx, prop: IkeProposal, spi_i: bytes, spi_r: bytes, initiator: bool, ni: bytes,
              nr: bytes, shared: bytes) -> None:
    assert old.prf is not None and old.keys is not None
    new = Ctx(spi_i, spi_r, initiator)
    seed = crypto.rekey_skeyseed(old.prf, old.keys.sk_d, shared, ni, nr)
    _derive_ike(new, prop, seed, ni, nr)
    sa.go("rekeyed" if initiator else "rekey_answered")
    sa.retiring, sa.ctx = old, new
    _established(sa, rekeyed=True)
    sa.emit(ev.SetTimer("rekey_ike", sa.rekey_delay(sa.policy.timers.ike_rekey_s)))


def rekeys_ike(msg: Message) -> bool:
    """A CREATE_CHILD_SA request for a new IKE SA (1.3.2), not a child SA."""
    offer = _need(msg, SA, "SA")
    return bool(offer.proposals) and offer.proposals[0].protocol_id == ProtocolId.IKE


def answer_child_rekey(sa: Host, ctx: Ctx, msg: Message) -> tuple[Payload, ...]:
    offer = _need(msg, SA, "SA")
    rekey = msg.notify(NotifyType.REKEY_SA)
    if rekey is None:
        # we run exactly one child per peering
        raise RemoteProtocolError("new child SAs are not accepted", notify=NotifyType.NO_ADDITIONAL_SAS)
    cid = sa.child_by_out_spi(int.from_bytes(rekey.spi, "big"))
    if cid is None:
        raise RemoteProtocolError("rekey of an unknown child SA", notify=NotifyType.CHILD_SA_NOT_FOUND,
                                  notify_data=b"")
    if not sa.child_is_live(cid):
        raise RemoteProtocolError("that child SA is being rekeyed already", notify=NotifyType.TEMPORARY_FAILURE)
    ke = msg.get(KE)
    reply_prop, esp = choose_esp(offer, sa.policy.esp, with_dh=ke is not None)
    shared, reply_ke = b"", ()
    if ke is not None:
        if ke.group != esp.dh:
            raise RemoteProtocolError(f"KE group {ke.group}", notify=NotifyType.INVALID_KE_PAYLOAD,
                                      notify_data=esp.dh.to_bytes(2, "big"))
        dh = crypto.dh_generate(esp.dh)
        shared = dh.shared_secret(ke.data)
        reply_ke = (KE(esp.dh, dh.public_bytes()),)
    _check_ts(sa, msg, initiator=False)
    ni, nr = _need(msg, Nonce, "Nonce").data, sa.nonce()
    our_spi = sa.new_child_spi()
    # The peer switches once it has our answer; we keep sending on the old SA until it
    # deletes it (or a moment has passed), so nothing is lost on the way (make-before-break).
    new_cid = _install(sa, ctx, esp, our_spi, reply_prop.spi, ni, nr, shared, we_initiated=False,
                       outbound=False, replaces=cid)
    sa.emit(ev.SetTimer(f"activate:{new_cid}", 1.0))
    sa.counters["child_rekeys"] += 1
    return (SA((Proposal(reply_prop.number, ProtocolId.ESP, our_spi, reply_prop.transforms),)), Nonce(nr),
            *reply_ke, TSi((ts_of(sa.policy.remote_ts),)), TSr((ts_of(sa.policy.local_ts),)))


def answer_ike_rekey(sa: Host, ctx: Ctx, msg: Message, after: After) -> tuple[Payload, ...]:
    """The peer rekeys the IKE SA (sa.py refuses a collision with one of ours, 2.25)."""
    reply_prop, prop = choose_ike(_need(msg, SA, "SA"), sa.policy.ike)
    spi_i = reply_prop.spi
    if len(spi_i) != 8 or spi_i == ZERO_SPI:
        raise _syntax("IKE rekey request without an 8-octet SPI")
    ke = _ke(msg, prop.dh)
    dh = crypto.dh_generate(prop.dh)
    shared = dh.shared_secret(ke.data)
    ni, nr = _need(msg, Nonce, "Nonce").data, sa.nonce()
    spi_r = sa.new_ike_spi()
    sa.counters["ike_rekeys"] += 1
    # The new SA takes over once our answer is out; the old one waits for the peer's delete.
    after.append(lambda: _swap_ike(sa, ctx, prop, spi_i, spi_r, False, ni, nr, shared))
    return (SA((Proposal(reply_prop.number, ProtocolId.IKE, spi_r, reply_prop.transforms),)), Nonce(nr),
            KE(prop.dh, dh.public_bytes()))


def notify_name(n: Notify | None) -> str:
    if n is None:
        return "unknown"
    try:
        return NotifyType(n.notify_type).name
    except ValueError:
        return f"notify {n.notify_type}"


__all__ = ["Handshake", "Host", "InitOffer", "answer_auth", "answer_child_rekey", "answer_ike_rekey",
           "answer_init", "notify_name", "rekeys_ike", "start_child_rekey", "start_ike_rekey", "start_init"]

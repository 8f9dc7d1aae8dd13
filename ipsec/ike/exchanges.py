"""The IKEv2 exchanges on top of the IkeSa plumbing (sa.py): IKE_SA_INIT and IKE_AUTH
(RFC 7296 1.2), CREATE_CHILD_SA for child and IKE SA rekeys (1.3.2, 1.3.3), and the
responder's dispatch of requests. Pure: everything leaves as commands.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from ipsec.ike import crypto
from ipsec.ike import events as ev
from ipsec.ike.auth import HASHES_WE_SIGN_WITH, check_peer, our_auth, our_certreqs, our_certs, peer_cert_serial
from ipsec.ike.constants import DhGroup, ExchangeType, NotifyType, ProtocolId
from ipsec.ike.context import ZERO_SPI, Ctx
from ipsec.ike.errors import IkeError, LocalProtocolError, RemoteProtocolError
from ipsec.ike.message import Message
from ipsec.ike.payloads import (
    KE,
    SA,
    Auth,
    Cert,
    Delete,
    IDi,
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
    accept_esp,
    accept_ike,
    choose_esp,
    choose_ike,
    esp_sa_payload,
    ike_sa_payload,
    ts_acceptable,
    ts_of,
)

if TYPE_CHECKING:
    from ipsec.ike.sa import IkeSa

After = list[Callable[[], None]]
MAX_INIT_RETRIES = 3


def _syntax(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(why, notify=NotifyType.INVALID_SYNTAX)


def _need(msg: Message, cls: type, what: str):
    p = msg.get(cls)
    if p is None:
        raise _syntax(f"{ExchangeType(msg.exchange).name} without {what}")
    return p


def _nat_hash(spi_i: bytes, spi_r: bytes, addr: ev.Address) -> bytes:
    return crypto.nat_detection_hash(spi_i, spi_r, IPv4Address(addr[0]), addr[1])


def _nat_notifies(sa: IkeSa, spi_i: bytes, spi_r: bytes, dst: ev.Address) -> tuple[Notify, Notify]:
    # With forced encapsulation we claim a source that cannot match, so the peer
    # believes we sit behind a NAT and puts ESP in UDP (what strongSwan's encap=yes does).
    src = sa.rng(20) if sa.policy.force_encap else _nat_hash(spi_i, spi_r, sa.local)
    return (Notify(NotifyType.NAT_DETECTION_SOURCE_IP, src),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, _nat_hash(spi_i, spi_r, dst)))


def _detect_nat(sa: IkeSa, msg: Message, spi_i: bytes, spi_r: bytes, peer: ev.Address) -> None:
    srcs = [n.data for n in msg.all(Notify) if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
    dst = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    if not srcs or dst is None:
        if sa.policy.force_encap:
            raise RemoteProtocolError("peer does not support NAT traversal; ESP must travel in UDP (RFC 3948)",
                                      notify=NotifyType.NO_PROPOSAL_CHOSEN)
        return
    sa.nat_remote = _nat_hash(spi_i, spi_r, peer) not in srcs
    sa.nat_local = dst.data != _nat_hash(spi_i, spi_r, sa.local)


def _signature_notify(sa: IkeSa) -> tuple[Notify, ...]:
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


def start_init(sa: IkeSa, group: int | None = None) -> None:
    props = sa.policy.ike
    group = group or props[0].dh
    sa.init.setdefault("ni", sa.nonce())
    sa.init["dh"] = crypto.dh_generate(group)
    payloads: list[Payload] = []
    if "cookie" in sa.init:
        payloads.append(Notify(NotifyType.COOKIE, sa.init["cookie"]))  # first, as 2.6 requires
    payloads += [ike_sa_payload(props), KE(group, sa.init["dh"].public_bytes()), Nonce(sa.init["ni"]),
                 *_nat_notifies(sa, sa.ctx.spi_i, ZERO_SPI, sa.peer), *_signature_notify(sa)]
    sa.resend_init(sa.ctx, tuple(payloads), lambda c, m: _init_response(sa, c, m))


def _init_response(sa: IkeSa, ctx: Ctx, msg: Message) -> None:
    cookie = msg.notify(NotifyType.COOKIE)
    retries = sa.init.get("retries", 0)
    if cookie is not None:
        if retries >= MAX_INIT_RETRIES or not 1 <= len(cookie.data) <= 64:
            raise RemoteProtocolError("responder keeps asking for cookies")
        sa.init.update(cookie=cookie.data, retries=retries + 1)
        start_init(sa, sa.init["dh"].group)
        return
    bad_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
    if bad_ke is not None:
        group = int.from_bytes(bad_ke.data[:2], "big")
        offered = [p.dh for p in sa.policy.ike]
        if group == sa.init["dh"].group:
            # 1.2: the notify names the group the responder wants; it wants the one we used
            raise RemoteProtocolError(f"responder answered INVALID_KE_PAYLOAD naming DH group {group}, but our KE "
                                      f"was in that group already (the responder contradicts itself)")
        if group not in offered:
            raise RemoteProtocolError(f"responder wants DH group {group}, which we do not offer "
                                      f"(we offer {', '.join(map(str, dict.fromkeys(offered)))})")
        if retries >= MAX_INIT_RETRIES:
            raise RemoteProtocolError(f"responder still refuses our KE after {retries} retries (now it wants DH group "
                                      f"{group})")
        sa.init["retries"] = retries + 1
        start_init(sa, group)
        return
    err = sa.error_notify(msg)
    if err is not None:
        raise RemoteProtocolError(f"responder refused IKE_SA_INIT: {_name(err)}")
    if msg.spi_r == ZERO_SPI:
        raise _syntax("IKE_SA_INIT response without a responder SPI")
    prop = accept_ike(_need(msg, SA, "SA"), sa.policy.ike)
    ke = _ke(msg, prop.dh)
    if sa.init["dh"].group != prop.dh:
        raise RemoteProtocolError("responder chose a DH group other than our KE's")
    nr = _need(msg, Nonce, "Nonce").data
    ctx.spi_r = msg.spi_r
    _detect_nat(sa, msg, ctx.spi_i, ctx.spi_r, sa.peer)
    shared = sa.init["dh"].shared_secret(ke.data)
    ni = sa.init["ni"]
    _derive_ike(ctx, prop, crypto.skeyseed(crypto.prf_for(prop.prf), ni, nr, shared), ni, nr)
    sa.init.update(nr=nr, proposal=prop)  # sa.py kept the response's exact bytes in init["response"]
    if sa.nat_local or sa.nat_remote or sa.policy.force_encap:
        sa.local_port, sa.peer = 4500, (sa.peer[0], 4500)  # 2.23: on to the NAT-T port
    sa.go("init_done")
    _send_auth(sa, ctx)


def _send_auth(sa: IkeSa, ctx: Ctx) -> None:
    assert ctx.prf is not None and ctx.keys is not None
    p = sa.policy
    idi = IDi(p.local_id.id_type, p.local_id.data)
    octets = crypto.signed_octets(sa.init["request"], sa.init["nr"], ctx.prf, ctx.keys.sk_pi, idi.encode())
    spi = sa.new_child_spi()
    sa.init["child_spi"] = spi
    payloads: list[Payload] = [idi, *our_certs(p), *our_certreqs(p)]  # 1.2: IDi, [CERT,] [CERTREQ,] [IDr,] AUTH
    if p.remote_id is not None:
        payloads.append(IDr(p.remote_id.id_type, p.remote_id.data))
    payloads += [our_auth(p, ctx.prf, octets), esp_sa_payload(p.esp, spi, with_dh=False),
                 TSi((ts_of(p.local_ts),)), TSr((ts_of(p.remote_ts),))]
    sa.request(ctx, ExchangeType.IKE_AUTH, tuple(payloads), lambda c, m: _auth_response(sa, c, m), "IKE_AUTH")


def _auth_response(sa: IkeSa, ctx: Ctx, msg: Message) -> None:
    assert ctx.prf is not None and ctx.keys is not None
    idr = msg.get(IDr)
    if idr is None or msg.get(Auth) is None:
        err = sa.error_notify(msg)
        raise RemoteProtocolError(f"peer refused IKE_AUTH: {_name(err) if err else 'no AUTH'}")
    octets = crypto.signed_octets(sa.init["response"], sa.init["ni"], ctx.prf, ctx.keys.sk_pr, idr.encode())
    sa.remote_id = check_peer(sa.policy, ctx.prf, octets, idr, msg.get(Auth), msg.all(Cert), sa.clock())
    sa.peer_cert_serial = peer_cert_serial(msg.all(Cert)) if sa.policy.psk is None else None
    sa.go("auth_done")
    _established(sa)
    reply_sa = msg.get(SA)
    if reply_sa is None:
        err = sa.error_notify(msg)
        sa.close(f"peer refused the child SA: {_name(err) if err else 'no SA'}")
        return
    esp, peer_spi = accept_esp(reply_sa, sa.policy.esp, with_dh=False)
    _check_ts(sa, msg, initiator=True)
    _install(sa, ctx, esp, sa.init["child_spi"], peer_spi, sa.init["ni"], sa.init["nr"], b"", we_initiated=True)
    sa.init.clear()


def _established(sa: IkeSa, rekeyed: bool = False) -> None:
    ctx = sa.ctx
    local, remote = (ctx.spi_i, ctx.spi_r) if ctx.initiator else (ctx.spi_r, ctx.spi_i)
    sa.emit(ev.Established(local, remote, sa.peer, sa.nat_local, sa.nat_remote, sa.remote_id, rekeyed))
    if not rekeyed:
        sa.established_timers()


def _check_ts(sa: IkeSa, msg: Message, initiator: bool) -> None:
    tsi, tsr = _need(msg, TSi, "TSi"), _need(msg, TSr, "TSr")
    mine, theirs = (tsi, tsr) if initiator else (tsr, tsi)
    if not (ts_acceptable(mine.selectors, sa.policy.local_ts) and ts_acceptable(theirs.selectors, sa.policy.remote_ts)):
        raise RemoteProtocolError(f"traffic selectors do not cover {sa.policy.local_ts} <-> {sa.policy.remote_ts}",
                                  notify=NotifyType.TS_UNACCEPTABLE)


def _install(sa: IkeSa, ctx: Ctx, esp: EspProposal, our_spi: bytes, peer_spi: bytes, ni: bytes, nr: bytes,
             shared: bytes, we_initiated: bool, outbound: bool = True, replaces: int | None = None) -> int:
    assert ctx.prf is not None and ctx.keys is not None
    km = crypto.child_sa_keys(ctx.prf, ctx.keys.sk_d, ni, nr, crypto.aes_gcm_keymat_len(esp.encr_bits),
                              shared_secret=shared)
    in_key, out_key = (km.encr_r, km.encr_i) if we_initiated else (km.encr_i, km.encr_r)
    from ipsec.ike.sa import Child

    cid = sa.child_id()
    child = ev.ChildSa(cid, int.from_bytes(our_spi, "big"), int.from_bytes(peer_spi, "big"), in_key, out_key,
                       esp.esn, sa.policy.local_ts, sa.policy.remote_ts, sa.peer)
    sa.children[cid] = Child(child, active=outbound)
    if replaces is not None:
        sa.children[replaces].successor = cid
    sa.emit(ev.InstallChild(child, outbound))
    sa.emit(ev.SetTimer(f"rekey_child:{cid}", sa.rekey_delay(sa.policy.timers.child_rekey_s)))
    return cid


# --- responder ---------------------------------------------------------------------------


def answer(sa: IkeSa, ctx: Ctx, msg: Message, src: ev.Address, data: bytes, after: After) -> tuple[Payload, ...]:
    """Handle one request; returns the response payloads. IkeErrors with a notify become
    error responses (sa.py)."""
    from ipsec.ike.sa import State

    ex = msg.exchange
    if ex == ExchangeType.IKE_SA_INIT and sa.state is State.IDLE:
        return _answer_init(sa, ctx, msg, src, data)
    if ex == ExchangeType.IKE_AUTH and sa.state is State.INIT_DONE:
        return _answer_auth(sa, ctx, msg, src)
    if ex == ExchangeType.INFORMATIONAL and sa.state in (State.ESTABLISHED, State.DELETING):
        return sa.answer_informational(ctx, msg, after)
    if ex == ExchangeType.CREATE_CHILD_SA and sa.state is State.ESTABLISHED and ctx is sa.ctx:
        return _answer_create_child(sa, ctx, msg, after)
    if ex == ExchangeType.CREATE_CHILD_SA:
        raise RemoteProtocolError("CREATE_CHILD_SA now", notify=NotifyType.TEMPORARY_FAILURE)
    raise RemoteProtocolError(f"{ExchangeType(ex).name if ex in ExchangeType._value2member_map_ else ex} "
                              f"request in state {sa.state.value}", notify=NotifyType.INVALID_SYNTAX)


def _answer_init(sa: IkeSa, ctx: Ctx, msg: Message, src: ev.Address, data: bytes) -> tuple[Payload, ...]:
    reply_prop, prop = choose_ike(_need(msg, SA, "SA"), sa.policy.ike)
    ke = _ke(msg, prop.dh)
    ni = _need(msg, Nonce, "Nonce").data
    sa.peer = src
    _detect_nat(sa, msg, msg.spi_i, ZERO_SPI, src)
    ctx.spi_r = sa._spi(8)
    dh = crypto.dh_generate(prop.dh)
    shared = dh.shared_secret(ke.data)
    nr = sa.nonce()
    _derive_ike(ctx, prop, crypto.skeyseed(crypto.prf_for(prop.prf), ni, nr, shared), ni, nr)
    sa.init.update(request=data, ni=ni, nr=nr, proposal=prop)
    sa.go("init_answered")
    return (SA((reply_prop,)), KE(prop.dh, dh.public_bytes()), Nonce(nr), *our_certreqs(sa.policy),
            *_nat_notifies(sa, ctx.spi_i, ctx.spi_r, src), *_signature_notify(sa))


def _answer_auth(sa: IkeSa, ctx: Ctx, msg: Message, src: ev.Address) -> tuple[Payload, ...]:
    assert ctx.prf is not None and ctx.keys is not None
    idi = _need(msg, IDi, "IDi")
    if sa.rebind is not None and sa.policy.remote_id is not None and not sa.policy.remote_id.matches(idi):
        # the provisional peering chosen at IKE_SA_INIT was another one: take the identity's own, if
        # it accepts the IKE proposal already agreed (authentication below still decides)
        other = sa.rebind(idi)
        if other is not None and sa.init["proposal"] in other.ike:
            sa.policy = other
    octets = crypto.signed_octets(sa.init["request"], sa.init["nr"], ctx.prf, ctx.keys.sk_pi, idi.encode())
    sa.remote_id = check_peer(sa.policy, ctx.prf, octets, idi, msg.get(Auth), msg.all(Cert), sa.clock())
    sa.peer_cert_serial = peer_cert_serial(msg.all(Cert)) if sa.policy.psk is None else None
    sa.peer = src  # IKE_AUTH arrived on the port the initiator moved to (4500 after NAT detection)
    p = sa.policy
    idr = IDr(p.local_id.id_type, p.local_id.data)
    mine = crypto.signed_octets(sa.init["response"], sa.init["ni"], ctx.prf, ctx.keys.sk_pr, idr.encode())
    head: tuple[Payload, ...] = (idr, *our_certs(p), our_auth(p, ctx.prf, mine))
    sa.go("auth_answered")
    _established(sa)
    try:
        reply_prop, esp = choose_esp(_need(msg, SA, "SA"), p.esp, with_dh=False)
        _check_ts(sa, msg, initiator=False)
    except IkeError as exc:
        # The IKE SA stands; only the child failed (2.21.3): say why, and let the initiator decide.
        return (*head, Notify(exc.notify or NotifyType.NO_PROPOSAL_CHOSEN))
    our_spi = sa.new_child_spi()
    _install(sa, ctx, esp, our_spi, reply_prop.spi, sa.init["ni"], sa.init["nr"], b"", we_initiated=False)
    sa.init.clear()
    return (*head, SA((Proposal(reply_prop.number, ProtocolId.ESP, our_spi, reply_prop.transforms),)),
            TSi((ts_of(p.remote_ts),)), TSr((ts_of(p.local_ts),)))


# --- CREATE_CHILD_SA ---------------------------------------------------------------------


def start_child_rekey(sa: IkeSa, cid: int) -> None:
    child = sa.children.get(cid)
    if child is None or child.rekeying or child.successor is not None:
        return
    child.rekeying = True
    esp = sa.policy.esp
    pfs = esp[0].dh
    new_spi, ni = sa.new_child_spi(), sa.nonce()
    dh = crypto.dh_generate(pfs) if pfs != DhGroup.NONE else None
    payloads: list[Payload] = [
        Notify(NotifyType.REKEY_SA, protocol_id=ProtocolId.ESP, spi=child.sa.in_spi.to_bytes(4, "big")),
        esp_sa_payload(esp, new_spi, with_dh=True), Nonce(ni)]
    if dh is not None:
        payloads.append(KE(pfs, dh.public_bytes()))
    payloads += [TSi((ts_of(sa.policy.local_ts),)), TSr((ts_of(sa.policy.remote_ts),))]

    def done(ctx: Ctx, msg: Message) -> None:
        child.rekeying = False
        if msg.get(SA) is None:
            err = sa.error_notify(msg)
            # TEMPORARY_FAILURE: the peer is busy with its own rekey (2.25); try again soon
            sa.emit(ev.SetTimer(f"rekey_child:{cid}", 2.0 + 3.0 * sa.jitter()))
            if err is None or err.notify_type not in (NotifyType.TEMPORARY_FAILURE, NotifyType.CHILD_SA_NOT_FOUND):
                raise RemoteProtocolError(f"peer refused the child rekey: {_name(err) if err else 'no SA'}")
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


def start_ike_rekey(sa: IkeSa) -> None:
    if sa.init.get("ike_rekeying") or sa.retiring is not None:
        return
    sa.init["ike_rekeying"] = True
    props = sa.policy.ike
    new_spi_i, ni = sa._spi(8), sa.nonce()
    dh = crypto.dh_generate(props[0].dh)
    old = sa.ctx

    def done(ctx: Ctx, msg: Message) -> None:
        sa.init.pop("ike_rekeying", None)
        reply = msg.get(SA)
        if reply is None:
            sa.emit(ev.SetTimer("rekey_ike", 2.0 + 3.0 * sa.jitter()))
            err = sa.error_notify(msg)
            if err is None or err.notify_type != NotifyType.TEMPORARY_FAILURE:
                raise RemoteProtocolError(f"peer refused the IKE SA rekey: {_name(err) if err else 'no SA'}")
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
        sa.request(old, ExchangeType.INFORMATIONAL, (Delete(ProtocolId.IKE),), lambda _c, _m: sa._drop_retiring(),
                   "delete of the old IKE SA")

    sa.request(old, ExchangeType.CREATE_CHILD_SA,
               (ike_sa_payload(props, new_spi_i), Nonce(ni), KE(props[0].dh, dh.public_bytes())), done,
               "IKE SA rekey")


def _swap_ike(sa: IkeSa, old: Ctx, prop: IkeProposal, spi_i: bytes, spi_r: bytes, initiator: bool, ni: bytes,
              nr: bytes, shared: bytes) -> None:
    assert old.prf is not None and old.keys is not None
    new = Ctx(spi_i, spi_r, initiator)
    seed = crypto.rekey_skeyseed(old.prf, old.keys.sk_d, shared, ni, nr)
    _derive_ike(new, prop, seed, ni, nr)
    sa.retiring, sa.ctx = old, new
    _established(sa, rekeyed=True)
    sa.emit(ev.SetTimer("rekey_ike", sa.rekey_delay(sa.policy.timers.ike_rekey_s)))


def _answer_create_child(sa: IkeSa, ctx: Ctx, msg: Message, after: After) -> tuple[Payload, ...]:
    offer = _need(msg, SA, "SA")
    if offer.proposals and offer.proposals[0].protocol_id == ProtocolId.IKE:
        return _answer_ike_rekey(sa, ctx, msg, offer, after)
    rekey = msg.notify(NotifyType.REKEY_SA)
    if rekey is None:
        # we run exactly one child per peering
        raise RemoteProtocolError("new child SAs are not accepted", notify=NotifyType.NO_ADDITIONAL_SAS)
    cid = sa.child_by_out_spi(int.from_bytes(rekey.spi, "big"))
    if cid is None:
        raise RemoteProtocolError("rekey of an unknown child SA", notify=NotifyType.CHILD_SA_NOT_FOUND,
                                  notify_data=b"")
    old = sa.children[cid]
    if old.rekeying or old.successor is not None or old.deleting:
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


def _answer_ike_rekey(sa: IkeSa, ctx: Ctx, msg: Message, offer: SA, after: After) -> tuple[Payload, ...]:
    if sa.init.get("ike_rekeying") or sa.retiring is not None:
        raise RemoteProtocolError("IKE SA rekey collision", notify=NotifyType.TEMPORARY_FAILURE)
    reply_prop, prop = choose_ike(offer, sa.policy.ike)
    spi_i = reply_prop.spi
    if len(spi_i) != 8 or spi_i == ZERO_SPI:
        raise _syntax("IKE rekey request without an 8-octet SPI")
    ke = _ke(msg, prop.dh)
    dh = crypto.dh_generate(prop.dh)
    shared = dh.shared_secret(ke.data)
    ni, nr = _need(msg, Nonce, "Nonce").data, sa.nonce()
    spi_r = sa._spi(8)
    sa.counters["ike_rekeys"] += 1
    # The new SA takes over once our answer is out; the old one waits for the peer's delete.
    after.append(lambda: _swap_ike(sa, ctx, prop, spi_i, spi_r, False, ni, nr, shared))
    return (SA((Proposal(reply_prop.number, ProtocolId.IKE, spi_r, reply_prop.transforms),)), Nonce(nr),
            KE(prop.dh, dh.public_bytes()))


def _name(n: Notify | None) -> str:
    if n is None:
        return "unknown"
    try:
        return NotifyType(n.notify_type).name
    except ValueError:
        return f"notify {n.notify_type}"


__all__ = ["LocalProtocolError", "answer", "start_child_rekey", "start_ike_rekey", "start_init"]

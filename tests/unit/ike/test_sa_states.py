"""The IKE SA's and its children's state tables (sa.py): rekeys walk them step by step, an event
a table does not hold raises, and what IKE_SA_INIT leaves for IKE_AUTH is typed state
(exchanges.InitOffer, exchanges.Handshake), the COOKIE round trips of RFC 7296 2.6 included."""

from __future__ import annotations

import pytest

from ipsec.ike import events as ev
from ipsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from ipsec.ike.errors import LocalProtocolError
from ipsec.ike.exchanges import MAX_INIT_RETRIES, Handshake
from ipsec.ike.message import Message
from ipsec.ike.payloads import KE, Nonce, Notify
from ipsec.ike.sa import CHILD_TRANSITIONS, TRANSITIONS, UP, ChildState, IkeSa, State
from tests.unit.ike.simnet import A_ADDR, B_ADDR, SimNet, psk_policies


def step(net: SimNet) -> None:
    """Deliver one datagram (the first IKE_SA_INIT makes b's responder, as SimNet.deliver does)."""
    dst, data, src, port = net.wire.pop(0)
    if dst.sa is None:
        dst.sa = IkeSa(net.pb, dst.addr, src, initiator=False, peer_spi=Message.decode(data).spi_i)
    net.apply(dst, dst.sa.receive(data, src, port))


def up() -> SimNet:
    net = SimNet(*psk_policies())
    net.start()
    assert net.a.sa.state is State.ESTABLISHED and net.b.sa.state is State.ESTABLISHED
    return net


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_ike_rekey_walks_the_table(who):
    net = up()
    me = net.a if who == "initiator" else net.b
    peer = net.other(me)
    old_spi = me.sa.ctx.local_spi
    net.apply(me, me.sa.rekey_ike())
    assert me.sa.state is State.REKEYING and me.sa.retiring is None
    assert me.sa.describe()["state"] == "established"  # the tunnel is up all along (status, telemetry)
    # a second rekey, by hand or by its timer, while one is under way: nothing
    assert me.sa.rekey_ike() == [] and me.sa.timer("rekey_ike") == []
    step(net)  # the peer answers and moves to the new IKE SA
    assert peer.sa.state is State.RETIRING and peer.sa.retiring is not None
    assert peer.sa.describe()["state"] == "established"
    step(net)  # we have the answer: new IKE SA, and the old one's Delete goes out on the old SA
    assert me.sa.state is State.RETIRING and me.sa.retiring is not None and me.sa.ctx.local_spi != old_spi
    assert me.sa.rekey_ike() == []  # not before the old IKE SA is gone
    step(net)  # the peer deletes the old IKE SA
    assert peer.sa.state is State.ESTABLISHED and peer.sa.retiring is None
    step(net)
    assert me.sa.state is State.ESTABLISHED and me.sa.retiring is None
    assert not net.wire and net.ping(net.a) and net.ping(net.b)


def test_ike_rekey_collision_is_refused_and_tried_again():
    net = up()
    net.apply(net.a, net.a.sa.rekey_ike())
    net.apply(net.b, net.b.sa.rekey_ike())
    assert net.a.sa.state is State.REKEYING and net.b.sa.state is State.REKEYING
    net.deliver()
    # each refused the other's (TEMPORARY_FAILURE, 2.25) and waits a little before trying again
    assert net.a.sa.state is State.ESTABLISHED and net.b.sa.state is State.ESTABLISHED
    assert net.a.sa.counters["ike_rekeys"] == 0 and net.b.sa.counters["ike_rekeys"] == 0
    assert 2.0 <= net.a.timers["rekey_ike"] - net.now <= 5.0
    net.advance(6)
    assert net.a.sa.counters["ike_rekeys"] >= 1 and net.a.sa.state is State.ESTABLISHED
    assert net.ping(net.a) and net.ping(net.b)


def test_child_rekey_walks_the_child_table():
    net = up()
    [old] = net.a.sa.children
    net.apply(net.a, net.a.sa.rekey_child())
    assert net.a.sa.children[old].state is ChildState.REKEYING
    # the peer may not rekey it meanwhile (2.25): its request would be refused with TEMPORARY_FAILURE
    assert not net.a.sa.child_is_live(old)
    step(net)  # b answers: its old child is replaced, the new one is inbound only for a moment
    b_old = net.b.sa.child_by_out_spi(net.a.sa.children[old].sa.in_spi)
    assert net.b.sa.children[b_old].state is ChildState.REPLACED
    [b_new] = set(net.b.sa.children) - {b_old}
    assert net.b.sa.children[b_new].state is ChildState.LIVE and not net.b.sa.children[b_new].active
    step(net)  # a has the answer: new child in use, the old one's Delete goes out
    assert net.a.sa.children[old].state is ChildState.DELETING and net.a.sa.children[old].successor
    net.deliver()
    assert net.b.sa.children[b_old].state is ChildState.DELETING and net.b.sa.children[b_new].active
    net.advance(10)  # the old ones linger, then go
    assert old not in net.a.sa.children and b_old not in net.b.sa.children
    assert [c.state for c in net.a.sa.children.values()] == [ChildState.LIVE]
    assert net.ping(net.a) and net.ping(net.b)


def test_events_the_tables_do_not_hold_raise():
    net = up()
    sa = net.a.sa
    for event in ("rekeyed", "rekey_refused", "retired", "init_done", "initiate"):
        with pytest.raises(LocalProtocolError, match=f"'{event}' is illegal in state established"):
            sa.go(event)
    assert sa.state is State.ESTABLISHED
    [cid] = sa.children
    for event in ("delete", "rekey_failed"):
        with pytest.raises(LocalProtocolError, match=f"'{event}' is illegal for child {cid} in state live"):
            sa.child_go(cid, event)
    assert sa.children[cid].state is ChildState.LIVE
    # the tables: every state can close, only an up IKE SA is deleted or rekeyed, CLOSED is the end
    assert all(TRANSITIONS[(s, "closed")] is State.CLOSED for s in State)
    assert {s for (s, e) in TRANSITIONS if e == "delete"} == UP
    assert {s for (s, e) in TRANSITIONS if e == "rekey"} == {State.ESTABLISHED}
    assert {e for (s, e) in TRANSITIONS if s is State.CLOSED} == {"closed"}
    assert {s for (s, e) in CHILD_TRANSITIONS if e == "rekey"} == {ChildState.LIVE}


def initiator() -> tuple[IkeSa, Message]:
    pa, _ = psk_policies()
    sa = IkeSa(pa, A_ADDR, B_ADDR, initiator=True)
    [send] = [c for c in sa.initiate() if isinstance(c, ev.Send)]
    return sa, Message.decode(send.data)


def cookie_answer(request: Message, cookie: bytes) -> bytes:
    return Message(request.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0,
                   (Notify(NotifyType.COOKIE, cookie),)).encode()


def test_cookie_round_trips_are_typed_state_and_bounded():
    sa, first = initiator()
    assert sa.state is State.INIT_SENT and sa.offer is not None and sa.offer.cookie is None
    assert sa.offer.request == first.encode() and sa.handshake is None
    req = first
    for n in range(1, MAX_INIT_RETRIES + 1):
        out = sa.receive(cookie_answer(req, bytes([n]) * 16), B_ADDR, 500)
        [send] = [c for c in out if isinstance(c, ev.Send)]
        req = Message.decode(send.data)
        # 2.6: the cookie comes back first, with the same nonce (a cookie is computed over Ni)
        assert req.payloads[0] == Notify(NotifyType.COOKIE, bytes([n]) * 16)
        assert req.get(Nonce) == first.get(Nonce) and req.get(KE).group == first.get(KE).group
        assert sa.state is State.INIT_SENT and sa.offer.cookie == bytes([n]) * 16 and sa.offer.retries == n
        assert sa.offer.request == send.data
    out = sa.receive(cookie_answer(req, b"again" * 4), B_ADDR, 500)
    [closed] = [c for c in out if isinstance(c, ev.Closed)]
    assert closed.reason == "responder keeps asking for cookies" and sa.state is State.CLOSED


def test_the_handshake_holds_both_messages_until_ike_auth():
    net = SimNet(*psk_policies())
    net.apply(net.a, net.a.sa.initiate())
    [(_dst, request, _src, _port)] = net.wire
    step(net)  # b answers IKE_SA_INIT
    b = net.b.sa
    assert b.state is State.INIT_DONE and isinstance(b.handshake, Handshake)
    [answer] = [c.data for c in net.b.events if isinstance(c, ev.Send)]
    assert b.handshake.request == request and b.handshake.response == answer
    assert b.agreed_proposal == net.pb.ike[0]
    step(net)  # a has the answer and sends IKE_AUTH
    a = net.a.sa
    assert a.state is State.AUTH_SENT and a.offer is None
    assert a.handshake.request == request and a.handshake.response == answer
    assert a.handshake.ni == b.handshake.ni and a.handshake.nr == b.handshake.nr
    net.deliver()
    assert a.state is State.ESTABLISHED and b.state is State.ESTABLISHED
    assert a.handshake is None and b.handshake is None and b.agreed_proposal is None

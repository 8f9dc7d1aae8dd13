"""IkeManager: routing by SPI, responders by source address, stateless cookies under load
(RFC 7296 2.6), replacement of a peering's IKE SA, reconnects."""

from __future__ import annotations

from ipsec.ike import events as ev
from ipsec.ike.constants import NotifyType
from ipsec.ike.manager import IkeManager
from ipsec.ike.message import Message
from ipsec.ike.sa import State
from tests.unit.ike.simnet import A_ADDR, B_ADDR, cert_policies, psk_policies


def wire(mgr_a, mgr_b, tagged, limit=100):
    """Deliver Send commands between two managers until quiet; returns all commands seen."""
    seen = []
    queue = [("a", t) for t in tagged]
    for _ in range(limit):
        if not queue:
            return seen
        side, (_peer, c) = queue.pop(0)
        seen.append((side, c))
        if isinstance(c, ev.Send):
            dst = mgr_b if side == "a" else mgr_a
            src = (A_ADDR if side == "a" else B_ADDR)[0], c.local_port
            out = dst.datagram(c.data, src, c.local_port)
            queue += [("b" if side == "a" else "a", t) for t in out]
    raise AssertionError("storm")


def managers(cookie_threshold=16, policies=None):
    pa, pb = policies or psk_policies()
    a = IkeManager(A_ADDR)
    b = IkeManager(B_ADDR, cookie_threshold=cookie_threshold)
    a.set_peer(pa, B_ADDR, initiate=True)
    b.set_peer(pb, None, initiate=False)
    return a, b


def test_initiator_and_responder_meet():
    a, b = managers()
    seen = wire(a, b, a.timer("b", "reconnect"))
    assert a.peers["b"].sa.state is State.ESTABLISHED and b.peers["a"].sa.state is State.ESTABLISHED
    assert sum(isinstance(c, ev.InstallChild) for _s, c in seen) == 2
    assert not b.half_open


def test_rsa_certificates():
    from dataclasses import replace

    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.unit.ike.simnet import issue, make_ca

    ca = make_ca()
    pa, pb = cert_policies(ca=ca)
    ka, ca_a = issue(ca, "198.19.255.1", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    kb, cb = issue(ca, "198.19.255.2", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    a, b = managers(policies=(replace(pa, key=ka, cert=ca_a), replace(pb, key=kb, cert=cb)))
    wire(a, b, a.timer("b", "reconnect"))
    assert a.peers["b"].sa.state is State.ESTABLISHED and b.peers["a"].sa.remote_id == "198.19.255.1"


def test_cookies_under_load():
    a, b = managers(cookie_threshold=0)  # every new IKE_SA_INIT must bring a cookie
    seen = wire(a, b, a.timer("b", "reconnect"))
    assert b.counters["cookies_sent"] == 1
    # b answered the first request statelessly with a COOKIE notify, a repeated it with the cookie
    inits = [Message.decode(c.data) for s, c in seen if s == "a" and isinstance(c, ev.Send)][:2]
    assert inits[0].notify(NotifyType.COOKIE) is None and inits[1].notify(NotifyType.COOKIE) is not None
    assert a.peers["b"].sa.state is State.ESTABLISHED


def test_forged_cookie_is_refused():
    a, b = managers(cookie_threshold=0)
    first = a.timer("b", "reconnect")
    send = next(c for _p, c in first if isinstance(c, ev.Send))
    msg = Message.decode(send.data)
    from ipsec.ike.payloads import Notify

    forged = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.flags, 0,
                     (Notify(NotifyType.COOKIE, b"\x01" + bytes(32)), *msg.payloads)).encode()
    out = b.datagram(forged, (A_ADDR[0], 500), 500)
    assert b.counters["cookies_bad"] == 1 and not b.half_open
    assert all(isinstance(c, ev.Send) for _p, c in out)  # only a fresh cookie goes back


def test_new_ike_sa_from_the_peer_replaces_the_old():
    a, b = managers()
    wire(a, b, a.timer("b", "reconnect"))
    old = b.peers["a"].sa
    # a restarts: a brand-new manager, same policy, initiates again
    a2 = IkeManager(A_ADDR)
    a2.set_peer(a.peers["b"].policy, B_ADDR, initiate=True)
    seen = wire(a2, b, a2.timer("b", "reconnect"))
    assert b.peers["a"].sa is not old and b.peers["a"].sa.state is State.ESTABLISHED
    assert old.state is not State.ESTABLISHED
    assert any(isinstance(c, ev.RemoveChild) for s, c in seen if s == "b")


def test_unknown_source_gets_nothing():
    a, b = managers()
    first = a.timer("b", "reconnect")
    send = next(c for _p, c in first if isinstance(c, ev.Send))
    # b knows no peer at 203.0.113.5 ... but b has exactly one passive peering, which takes it;
    # with an initiating peering configured instead, strangers are refused
    c = IkeManager(B_ADDR)
    c.set_peer(b.peers["a"].policy, ("198.18.1.2", 500), initiate=False)
    out = c.datagram(send.data, ("203.0.113.5", 500), 500)
    assert not [cmd for _p, cmd in out if isinstance(cmd, ev.Send)]  # nothing is sent
    assert [(p, r.reason, r.src) for p, r in out] == [("", "no_peer", ("203.0.113.5", 500))]  # tagged by no peer
    assert c.counters["no_peer"] == 1


def test_closed_initiator_reconnects_with_backoff():
    a, _b = managers()
    a.timer("b", "reconnect")
    out = a.peers["b"].sa.close("test")
    tagged = a._run("b", out)
    timers = [c for _p, c in tagged if isinstance(c, ev.SetTimer) and c.name == "reconnect"]
    assert timers and 0.5 < timers[0].delay < 1.5


def test_several_passive_peerings_are_told_apart_by_identity():
    """Peers behind NATs (no fixed address: passive peerings) all look alike at IKE_SA_INIT; the
    responder starts with one of them and takes the right one when IDi arrives in IKE_AUTH."""
    from dataclasses import replace

    from ipsec.ike.policy import Identity

    pa, pb = psk_policies()
    a = IkeManager(A_ADDR)
    a.set_peer(pa, B_ADDR, initiate=True)
    b = IkeManager(B_ADDR)
    other = replace(pb, name="x", remote_id=Identity.address("198.19.255.9"))
    b.set_peer(other, None, initiate=False)  # first: the provisional choice at IKE_SA_INIT
    b.set_peer(pb, None, initiate=False)
    wire(a, b, a.timer("b", "reconnect"))
    assert a.peers["b"].sa.state is State.ESTABLISHED
    assert b.peers["a"].sa is not None and b.peers["a"].sa.state is State.ESTABLISHED
    assert b.peers["x"].sa is None
    # an identity no peering has is still refused (authentication decides, nothing is rebound)
    stranger = replace(pa, local_id=Identity.address("198.19.255.77"))
    c = IkeManager(A_ADDR)
    c.set_peer(stranger, B_ADDR, initiate=True)
    wire(c, b, c.timer("b", "reconnect"))
    assert c.peers["b"].sa.state is not State.ESTABLISHED and b.peers["x"].sa is None

"""The IKE SA state machine end to end in memory: two of ours, PSK and certificates,
rekeys from either side, loss, liveness, deletes, hostile input."""

from __future__ import annotations

import pytest

from ipsec.ike import events as ev
from ipsec.ike.policy import EspProposal, IkeProposal, Timers
from ipsec.ike.sa import State
from tests.unit.ike.simnet import SimNet, cert_policies, make_ca, psk_policies


def established(net: SimNet) -> bool:
    return net.a.sa.state is State.ESTABLISHED and net.b.sa is not None and net.b.sa.state is State.ESTABLISHED


@pytest.mark.parametrize("kind", ["psk", "ecdsa-cert"])
def test_establish_and_traffic(kind):
    pa, pb = psk_policies() if kind == "psk" else cert_policies()
    net = SimNet(pa, pb)
    net.start()
    assert established(net), (net.a.sa.closed_reason, net.b.sa and net.b.sa.closed_reason)
    assert net.ping(net.a) and net.ping(net.b)
    ea = next(e for e in net.a.events if isinstance(e, ev.Established))
    assert ea.remote_id == "198.19.255.2"
    # encapsulation was forced: after IKE_SA_INIT both sides talk on 4500
    assert net.a.sa.local_port == 4500 and net.b.sa.local_port == 4500
    assert net.b.sa.nat_remote  # we claimed to be behind a NAT (bogus NAT-D source hash)


@pytest.mark.parametrize("group", [19, 20, 31])
@pytest.mark.parametrize("bits", [128, 256])
@pytest.mark.parametrize("prf", [5, 6])  # PRF_HMAC_SHA2_256, _384
def test_groups_and_key_sizes(group, bits, prf):
    prop = IkeProposal(encr_bits=bits, prf=prf, dh=group)
    pa, pb = psk_policies(ike=(prop,), esp=(EspProposal(encr_bits=bits, esn=True, dh=group),))
    net = SimNet(pa, pb)
    net.start()
    assert established(net)
    assert net.ping(net.a) and net.ping(net.b)
    net.apply(net.a, net.a.sa.rekey_child())  # with PFS in this group
    net.deliver()
    assert net.ping(net.a) and net.ping(net.b)


def test_wrong_psk_fails_both_sides():
    pa, pb = psk_policies()
    from dataclasses import replace

    net = SimNet(pa, replace(pb, psk=b"other secret"))
    net.start()
    assert net.a.sa.state is State.CLOSED and net.b.sa.state is State.CLOSED
    assert "AUTHENTICATION_FAILED" in net.a.sa.closed_reason or "auth" in net.a.sa.closed_reason.lower()
    assert not net.a.installed and not net.b.installed


def test_untrusted_certificate_is_refused():
    pa, pb = cert_policies(b_ca=make_ca())  # b's cert comes from a CA a does not trust
    net = SimNet(pa, pb)
    net.start()
    assert net.a.sa.state is State.CLOSED
    assert "does not chain" in net.a.sa.closed_reason


def test_invalid_ke_renegotiates_group():
    pa, pb = psk_policies()
    from dataclasses import replace

    pa = replace(pa, ike=(IkeProposal(dh=31), IkeProposal(dh=19)))
    pb = replace(pb, ike=(IkeProposal(dh=19),))
    net = SimNet(pa, pb)
    net.start()
    assert established(net)
    # b's first responder refused the X25519 KE and kept no state; the retry in group 19 worked
    assert [e.reason for e in net.b.events if isinstance(e, ev.Closed)] == ["KE for group 31, expected 19"]
    assert net.ping(net.a)


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_child_rekey_without_loss(who):
    net = SimNet(*psk_policies())
    net.start()
    side = net.a if who == "initiator" else net.b
    before = dict(side.installed)
    net.apply(side, side.sa.rekey_child())
    # packets flow at every step of the exchange: deliver one datagram at a time
    while net.wire:
        dst, data, src, port = net.wire.pop(0)
        net.apply(dst, dst.sa.receive(data, src, port))
        assert net.ping(net.a) and net.ping(net.b)
    net.advance(10)
    assert net.ping(net.a) and net.ping(net.b)
    assert set(side.installed) != set(before)
    assert len(net.a.inbound) == 1 and len(net.b.inbound) == 1  # old inbound SAs gone after the linger
    assert net.a.sa.counters["child_rekeys"] == 1 and net.b.sa.counters["child_rekeys"] == 1


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_ike_rekey_keeps_children_and_new_keys_work(who):
    net = SimNet(*psk_policies())
    net.start()
    side = net.a if who == "initiator" else net.b
    old_spi = side.sa.ctx.local_spi
    net.apply(side, side.sa.rekey_ike())
    net.deliver()
    assert established(net)
    assert side.sa.ctx.local_spi != old_spi and side.sa.retiring is None
    assert net.a.sa.retiring is None and net.b.sa.retiring is None
    # the new IKE SA works: a child rekey through it
    net.apply(net.a, net.a.sa.rekey_child())
    net.deliver()
    net.advance(10)
    assert net.ping(net.a) and net.ping(net.b)
    # and the rekey initiator is now the new SA's original initiator (2.18)
    assert side.sa.ctx.initiator


def test_rekeys_on_timers():
    t = Timers(ike_rekey_s=100, child_rekey_s=40, dpd_s=1000)
    net = SimNet(*psk_policies(timers=t))
    net.start()
    net.advance(250)
    assert established(net)
    assert net.a.sa.counters["child_rekeys"] + net.b.sa.counters["child_rekeys"] >= 5
    assert net.a.sa.counters["ike_rekeys"] >= 2
    assert net.ping(net.a) and net.ping(net.b)


def test_lost_messages_are_retransmitted():
    net = SimNet(*psk_policies())
    net.drop_next = 1  # the first IKE_SA_INIT request is lost
    net.apply(net.a, net.a.sa.initiate())
    net.deliver()
    assert not established(net)
    net.advance(1)
    assert established(net)
    assert net.a.sa.counters["retransmits"] == 1


def test_lost_response_is_answered_from_cache():
    net = SimNet(*psk_policies())
    net.start()
    net.apply(net.a, net.a.sa.rekey_child())
    # deliver the request, lose the response
    dst, data, src, port = net.wire.pop(0)
    net.apply(dst, dst.sa.receive(data, src, port))
    net.wire.clear()
    net.advance(1)  # a retransmits; b answers from its cache without a second rekey
    assert net.b.sa.counters["retransmits"] == 1
    assert net.b.sa.counters["child_rekeys"] == 1
    net.advance(10)
    assert net.ping(net.a) and net.ping(net.b)


def test_dead_peer_is_detected():
    t = Timers(dpd_s=5)
    net = SimNet(*psk_policies(timers=t))
    net.start()
    net.wire.clear()

    class Void:  # b vanishes: whatever it would receive is lost, its timers do nothing
        def receive(self, *_a):
            return []

        def timer(self, _name):
            return []

    net.b.sa = Void()
    net.advance(60)
    closed = [e for e in net.a.events if isinstance(e, ev.Closed)]
    assert closed and "no answer to liveness check" in closed[0].reason
    assert any(isinstance(e, ev.RemoveChild) for e in net.a.events)


def test_delete_from_either_side():
    net = SimNet(*psk_policies())
    net.start()
    net.apply(net.b, net.b.sa.close("maintenance"))
    net.deliver()
    assert net.a.sa.state is State.CLOSED and net.b.sa.state is State.CLOSED
    assert [e.reason for e in net.a.events if isinstance(e, ev.Closed)] == ["peer deleted the IKE SA"]
    assert not net.a.inbound and not net.b.inbound


def test_hostile_datagrams_change_nothing():
    net = SimNet(*psk_policies())
    net.start()
    sa = net.a.sa
    state = sa.describe()
    junk = [b"", b"\x00" * 10, bytes(28), b"\xff" * 200]
    # a valid-looking header for our SA with garbage inside the SK payload
    from ipsec.ike.message import Message

    forged = Message(sa.ctx.spi_i, sa.ctx.spi_r, 37, 0x20, 5, ()).encode()
    for j in [*junk, forged]:
        assert sa.receive(j, ("203.0.113.9", 4500)) == []
    assert sa.state is State.ESTABLISHED
    after = sa.describe()
    assert after["children"] == state["children"]
    assert after["counters"]["malformed"] >= 3
    assert net.ping(net.a)


def test_no_reflection_of_cached_responses_to_forgeries():
    net = SimNet(*psk_policies())
    net.start()
    b = net.b.sa
    msg_id, _cached = b.ctx.last_response
    from ipsec.ike.message import Message

    # the live SPIs and the answered message ID, but not the original request's bytes
    forged = Message(b.ctx.spi_i, b.ctx.spi_r, 35, 0x08, msg_id, ()).encode()
    assert b.receive(forged, ("203.0.113.66", 4500), 4500) == []
    assert b.counters["retransmits"] == 0


def test_unauthenticated_init_cannot_touch_an_established_sa():
    net = SimNet(*psk_policies())
    net.start()
    b = net.b.sa
    from ipsec.ike.message import Message

    for mid in range(4):
        for body in (b"", b"\x00\x05garbage"):
            hdr = Message(b.ctx.spi_i, b.ctx.spi_r, 34, 0x08, mid, ()).encode()
            data = hdr[:24] + (28 + len(body)).to_bytes(4, "big") + body
            b.receive(data, ("203.0.113.66", 500), 500)
    assert b.state is State.ESTABLISHED
    assert net.ping(net.a) and net.ping(net.b)


def test_certreq_with_certificates_only():
    from ipsec.ike.message import Message
    from ipsec.ike.payloads import CertReq

    for policies, expect in ((cert_policies(), True), (psk_policies(), False)):
        net = SimNet(*policies)
        net.start()
        # b's IKE_SA_INIT response is plain: it must carry a CERTREQ naming the CA iff certs are used
        resp = Message.decode(next(e.data for e in net.b.events if isinstance(e, ev.Send)))
        req = resp.get(CertReq)
        assert (req is not None) is expect
        if expect:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            h = hashes.Hash(hashes.SHA1())
            h.update(policies[0].cas[0].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
            assert req.ca_hashes() == (h.finalize(),)

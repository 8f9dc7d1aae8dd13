"""Certificate auth binds a peer to *its* certificate: the device serial the config names for it, and
not a revoked one (issue 13 section 2). Before, any certificate from the CA with the right SAN passed."""

from __future__ import annotations

from dataclasses import replace

from ipsec.ike.policy import Identity, PeerPolicy
from ipsec.ike.sa import State
from tests.unit.ike.simnet import A_TS, B_TS, SimNet, ldevid, make_ca


def _pair(ca, a_serial="LAB-B1", b_serial="LAB-B2", **b_kw):
    ka, ca_a = ldevid(ca, "198.19.255.1", a_serial)
    kb, cb = ldevid(ca, "198.19.255.2", b_serial)
    a = PeerPolicy("b2", Identity.address("198.19.255.1"), Identity.address("198.19.255.2"), A_TS, B_TS,
                   key=ka, cert=ca_a, cas=(ca[1],), remote_serial="LAB-B2")
    b = PeerPolicy("b1", Identity.address("198.19.255.2"), Identity.address("198.19.255.1"), B_TS, A_TS,
                   key=kb, cert=cb, cas=(ca[1],), remote_serial="LAB-B1", **b_kw)
    return a, b


def test_the_certificate_issued_for_that_peer_passes():
    net = SimNet(*_pair(make_ca()))
    net.start()
    assert net.a.sa.state is State.ESTABLISHED and net.b.sa.state is State.ESTABLISHED


def test_another_gateways_certificate_with_the_right_address_is_refused():
    # a stolen box (serial LAB-B3) re-issued... or any certificate of the CA whose SAN names b1's system IP:
    # only the one issued to b1's serial authenticates b1
    ca = make_ca()
    a, b = _pair(ca, a_serial="LAB-B3")
    net = SimNet(a, b)
    net.start()
    assert net.b.sa is None or net.b.sa.state is not State.ESTABLISHED
    assert net.a.sa.state is State.CLOSED
    assert not net.a.installed and not net.b.installed


def test_a_revoked_certificate_is_refused():
    ca = make_ca()
    a, b = _pair(ca)
    b = replace(b, revoked=frozenset({a.cert.serial_number}))
    net = SimNet(a, b)
    net.start()
    assert net.a.sa.state is State.CLOSED and "AUTHENTICATION_FAILED" in net.a.sa.closed_reason
    assert not net.a.installed and not net.b.installed

"""A peering whose policy changes only in credentials (our own key/certificate, the trust anchors,
the revocation set) keeps its established IKE SA: nothing the SA agreed on changed, and it was
authenticated. The one exception: the peer's own certificate, the one it authenticated with, is
revoked now. Any other change closes the SA and the peering starts over. A renewed LDevID (same
device serial and SAN, new key) is what the next IKE SA authenticates with."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network

import pytest
from cryptography import x509

from ipsec.ike import events as ev
from ipsec.ike.manager import IkeManager
from ipsec.ike.policy import Identity, IkeProposal, PeerPolicy
from ipsec.ike.sa import State
from tests.unit.ike.mgrnet import MgrNet
from tests.unit.ike.simnet import A_ADDR, A_TS, B_ADDR, B_TS, ldevid, make_ca

A_IP, B_IP = "198.19.255.1", "198.19.255.2"
A_SERIAL, B_SERIAL = "LAB-B1", "LAB-B2"


class Lab:
    """Gateway A (initiates, knows B's address) and gateway B (passive), each authenticating with
    its own LDevID and requiring the other's device serial."""

    def __init__(self):
        self.ca = make_ca()
        ka, ca_ = ldevid(self.ca, A_IP, A_SERIAL)
        kb, cb = ldevid(self.ca, B_IP, B_SERIAL)
        self.pol = {
            "a": PeerPolicy("b", Identity.address(A_IP), Identity.address(B_IP), A_TS, B_TS,
                            key=ka, cert=ca_, cas=(self.ca[1],), remote_serial=B_SERIAL),
            "b": PeerPolicy("a", Identity.address(B_IP), Identity.address(A_IP), B_TS, A_TS,
                            key=kb, cert=cb, cas=(self.ca[1],), remote_serial=A_SERIAL),
        }
        self.net = MgrNet(self.manager("a"), self.manager("b"))

    def manager(self, side: str) -> IkeManager:
        m = IkeManager(A_ADDR if side == "a" else B_ADDR)
        self.set(side, self.pol[side], m)
        return m

    def set(self, side: str, policy: PeerPolicy, mgr: IkeManager | None = None) -> list:
        """The side's config now says ``policy`` (as nsg.tunnels applies it); returns the commands."""
        self.pol[side] = policy
        m = mgr or self.net.mgr[side]
        out = m.set_peer(policy, B_ADDR if side == "a" else None, initiate=side == "a")
        return out if mgr is not None else self.net.apply(side, out)

    def sa(self, side: str):
        return self.net.mgr[side].peers["b" if side == "a" else "a"].sa

    def renew(self, side: str) -> PeerPolicy:
        key, cert = ldevid(self.ca, A_IP if side == "a" else B_IP, A_SERIAL if side == "a" else B_SERIAL)
        return replace(self.pol[side], key=key, cert=cert)

    def up(self) -> bool:
        return all(self.sa(s) is not None and self.sa(s).state is State.ESTABLISHED for s in ("a", "b"))


def other(side: str) -> str:
    return "b" if side == "a" else "a"


def side_of(p: PeerPolicy) -> str:
    return "a" if p.name == "b" else "b"  # a's peering is named after b and vice versa


def another_ca(lab: Lab, p: PeerPolicy) -> PeerPolicy:
    return replace(p, cas=(lab.ca[1], make_ca()[1]))


def unrelated_revoked(lab: Lab, p: PeerPolicy) -> PeerPolicy:
    # someone else's certificate, and our own (revoked by the time we renew): not the peer's
    return replace(p, revoked=frozenset({x509.random_serial_number(), lab.pol[side_of(p)].cert.serial_number}))


def all_credentials(lab: Lab, p: PeerPolicy) -> PeerPolicy:
    return another_ca(lab, unrelated_revoked(lab, lab.renew(side_of(p))))


KEEP = {
    "our LDevID renewed": lambda lab, p: lab.renew(side_of(p)),
    "a trust anchor added": another_ca,
    "revocation set without the peer's certificate": unrelated_revoked,
    "all three at once": all_credentials,
}


@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("change", list(KEEP))
def test_a_credential_change_keeps_the_established_sa(side, change):
    lab = Lab()
    lab.net.connect()
    assert lab.up()
    before = {s: lab.sa(s) for s in ("a", "b")}
    new = KEEP[change](lab, lab.pol[side])
    assert new != lab.pol[side]
    out = lab.set(side, new)
    assert out == []  # no close, no delete, no reconnect, no new IKE_SA_INIT
    assert not lab.net.wire
    assert {s: lab.sa(s) for s in ("a", "b")} == before and lab.up()
    assert lab.net.mgr[side].peers[new.name].policy == new  # what new SAs will use
    # the SA goes on working: its children rekey, it answers liveness checks
    lab.net.apply("a", lab.net.mgr["a"].rekey_child("b"))
    lab.net.deliver()
    lab.net.advance(60)
    assert {s: lab.sa(s) for s in ("a", "b")} == before and lab.up()
    assert not [c for s in ("a", "b") for _t, c in lab.net.seen[s] if isinstance(c, ev.Closed)]


@pytest.mark.parametrize("side", ["a", "b"])
def test_revoking_the_certificate_the_peer_authenticated_with_closes_the_sa(side):
    lab = Lab()
    lab.net.connect()
    sa = lab.sa(side)
    peer_cert = lab.pol[other(side)].cert
    assert sa.peer_cert_serial == peer_cert.serial_number
    out = lab.set(side, replace(lab.pol[side], revoked=frozenset({peer_cert.serial_number})))
    assert any(isinstance(c, ev.Send) for _t, c in out)  # an INFORMATIONAL Delete: the peer learns at once
    lab.net.deliver()
    closed = [c for _t, c in lab.net.seen[side] if isinstance(c, ev.Closed)]
    assert len(closed) == 1 and "revoked" in closed[0].reason
    assert sa.state is State.CLOSED and lab.sa(other(side)).state is State.CLOSED
    # and it does not come back with that certificate
    lab.net.advance(120)
    assert not lab.up()
    assert sa.state is State.CLOSED


def wider_remote_ts(lab: Lab, p: PeerPolicy) -> PeerPolicy:
    return replace(p, remote_ts=IPv4Network(f"{p.remote_ts.network_address}/24", strict=False))


# change -> whether the peering comes back up with it (a one-sided selector change does not:
# the peer's selectors no longer cover ours, TS_UNACCEPTABLE, 2.9)
OTHER = {
    "proposals": (lambda lab, p: replace(p, ike=(IkeProposal(encr_bits=256), IkeProposal())), True),
    "timers": (lambda lab, p: replace(p, timers=replace(p.timers, dpd_s=10.0)), True),
    "remote_ts": (wider_remote_ts, False),
    "remote_ts and our LDevID": (lambda lab, p: wider_remote_ts(lab, lab.renew(side_of(p))), False),
    "our LDevID and the proposals": (
        lambda lab, p: replace(lab.renew(side_of(p)), ike=(IkeProposal(encr_bits=256), IkeProposal())), True),
}


@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("change", list(OTHER))
def test_any_other_change_closes_and_starts_over(side, change):
    lab = Lab()
    lab.net.connect()
    before = {s: lab.sa(s) for s in ("a", "b")}
    make, comes_back = OTHER[change]
    new = make(lab, lab.pol[side])
    installed = {c.sa.in_spi for c in before[side].children.values()}
    out = lab.set(side, new)
    assert any(isinstance(c, ev.Send) for _t, c in out)  # the INFORMATIONAL Delete
    # the old SA and its children are gone at once, without waiting for the Delete's answer
    assert installed and installed <= {c.in_spi for _t, c in out if isinstance(c, ev.RemoveChild)}
    assert [c.reason for _t, c in out if isinstance(c, ev.Closed)] == ["peer configuration changed"]
    lab.net.deliver()
    assert all(before[s].state is State.CLOSED for s in ("a", "b"))
    lab.net.advance(30)  # the initiator's reconnect (at once, or after its backoff)
    assert lab.sa("a") is not before["a"]  # a new IKE_SA_INIT went out
    assert lab.up() is comes_back
    if comes_back:
        assert lab.sa("b") is not before["b"] and lab.sa(side).policy == new


def test_a_renewed_ldevid_authenticates_the_next_sa_after_the_peer_restarts():
    """B renews its LDevID (same device serial, same SAN, new key): the live SA stays; when A
    restarts and comes back, B authenticates with the new certificate and A accepts it."""
    lab = Lab()
    lab.net.connect()
    live = lab.sa("b")
    old = lab.pol["b"].cert
    renewed = lab.renew("b")
    assert lab.set("b", renewed) == [] and lab.sa("b") is live
    lab.net.restart("a", lab.manager("a"))  # same config; it knows nothing of the old SA
    lab.net.connect()
    assert lab.up() and lab.sa("b") is not live
    assert lab.sa("a").peer_cert_serial == renewed.cert.serial_number != old.serial_number


def test_a_renewed_ldevid_authenticates_the_next_sa_after_a_delete():
    """A renews; the live SA stays. The peer then deletes it (its config was removed and re-added):
    A reconnects with its new certificate, and B, requiring A's device serial, accepts it."""
    lab = Lab()
    lab.net.connect()
    old = lab.pol["a"].cert
    renewed = lab.renew("a")
    assert lab.set("a", renewed) == []
    lab.net.apply("b", lab.net.mgr["b"].remove_peer("a"))
    lab.set("b", lab.pol["b"])
    lab.net.deliver()
    assert lab.sa("a").state is State.CLOSED
    lab.net.advance(30)
    assert lab.up()
    assert lab.sa("b").peer_cert_serial == renewed.cert.serial_number != old.serial_number


def test_renewal_then_revocation_of_the_old_certificate_moves_the_peering_to_the_new_one():
    """The usual end of a renewal: the superseded certificate is revoked. The SA authenticated with it
    closes, and the peering comes back at once with the renewed one."""
    lab = Lab()
    lab.net.connect()
    old = lab.pol["a"].cert
    assert lab.set("a", lab.renew("a")) == []
    lab.set("b", replace(lab.pol["b"], revoked=frozenset({old.serial_number})))
    lab.net.deliver()
    lab.net.advance(30)
    assert lab.up()
    assert lab.sa("b").peer_cert_serial == lab.pol["a"].cert.serial_number != old.serial_number


def test_a_revocation_during_the_handshake_applies_to_its_ike_auth():
    """B answered A's IKE_SA_INIT; before A's IKE_AUTH arrives, B learns A's certificate is revoked."""
    lab = Lab()
    a, b = lab.net.mgr["a"], lab.net.mgr["b"]
    lab.net.apply("a", a.timer("b", "reconnect"))
    lab.net.step()
    assert len(b.half_open) == 1
    lab.set("b", replace(lab.pol["b"], revoked=frozenset({lab.pol["a"].cert.serial_number})))
    lab.net.deliver()
    assert b.peers["a"].sa is None and not b.half_open
    assert b.counters["refused.IKE_AUTH.AUTHENTICATION_FAILED"] == 1
    assert a.peers["b"].sa.state is State.CLOSED


def test_a_renewal_during_the_handshake_is_what_its_ike_auth_uses():
    lab = Lab()
    a = lab.net.mgr["a"]
    lab.net.apply("a", a.timer("b", "reconnect"))
    lab.net.step()
    renewed = lab.renew("b")
    assert lab.set("b", renewed) == []
    lab.net.deliver()
    assert lab.up() and a.peers["b"].sa.peer_cert_serial == renewed.cert.serial_number


def test_another_change_during_the_handshake_applies_to_its_ike_auth():
    """A non-credential change (here a timer) reaches a handshake in progress too: the SA that
    comes up carries the new policy, not the one that was current at IKE_SA_INIT."""
    lab = Lab()
    a = lab.net.mgr["a"]
    lab.net.apply("a", a.timer("b", "reconnect"))
    lab.net.step()
    new = replace(lab.pol["b"], timers=replace(lab.pol["b"].timers, dpd_s=10.0))
    lab.set("b", new)
    lab.net.deliver()
    lab.net.advance(60)
    assert lab.up() and lab.sa("b").policy == new


def test_removing_the_peering_during_the_handshake_leaves_no_sa_behind():
    lab = Lab()
    a, b = lab.net.mgr["a"], lab.net.mgr["b"]
    lab.net.apply("a", a.timer("b", "reconnect"))
    lab.net.step()
    lab.net.apply("b", b.remove_peer("a"))
    lab.net.deliver()
    assert "a" not in b.peers and not b.half_open and not b.by_spi
    assert not [c for _t, c in lab.net.seen["b"] if isinstance(c, ev.Established)]


def test_removing_an_established_peering_removes_its_children_at_once():
    lab = Lab()
    lab.net.connect()
    sa = lab.sa("b")
    installed = {c.sa.in_spi for c in sa.children.values()}
    out = lab.net.apply("b", lab.net.mgr["b"].remove_peer("a"))
    assert installed and installed <= {c.in_spi for _t, c in out if isinstance(c, ev.RemoveChild)}
    assert sa.state is State.CLOSED and not lab.net.mgr["b"].by_spi
    lab.net.deliver()  # the peer was told
    assert lab.sa("a").state is State.CLOSED


def test_a_peering_that_stops_initiating_ends_its_sa_and_does_not_call_again():
    """A's config now says B calls it (B moved behind a NAT): A's SA ends, and no reconnect of the
    old peering (armed when its SA closed) makes A initiate."""
    lab = Lab()
    lab.net.connect()
    old = lab.sa("a")
    lab.net.apply("a", lab.net.mgr["a"].set_peer(lab.pol["a"], None, initiate=False))
    assert old.state is State.CLOSED
    lab.net.deliver()
    lab.net.advance(60)
    assert lab.sa("a") is None

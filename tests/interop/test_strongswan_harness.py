"""The strongSwan harness itself: two real charons (kernel-libipsec) in two namespaces set up IKEv2 + ESP.

These are the ground truth later interop tests stand on, so they check the tunnel really carries the
traffic (the ping fails without it, the peer's ESP counters move) and that rekeys keep it up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import strongswan as strongswan_mod
from tests.interop.certs import issue_cert, make_ca
from tests.interop.strongswan import Charon, CharonError, Child, Connection, PeerNet, established, two_peers
from tests.peers import require_peer, require_root

pytestmark = [
    pytest.mark.root,
    require_root("network namespaces"),
    require_peer(strongswan_mod.missing()),
]

IKE, CHILD = "gw", "net"


@pytest.fixture
def net() -> Iterator[PeerNet]:
    with two_peers() as n:
        yield n


def connection(net: PeerNet, side: int, **kw) -> Connection:
    child = Child(CHILD, (f"{net.inner[side]}/32",), (f"{net.inner[1 - side]}/32",))
    return Connection(IKE, remote_addrs=(net.ike[1 - side],), local_id=kw.pop("local_id", net.ike[side]),
                      remote_id=kw.pop("remote_id", net.ike[1 - side]), children=(child,), **kw)


@contextlib.contextmanager
def charon_pair(net: PeerNet, workdir: Path, conns: tuple[Connection, Connection]) -> Iterator[tuple[Charon, Charon]]:
    with contextlib.ExitStack() as stack:
        pair = []
        for side, conn in enumerate(conns):
            c = Charon(net.ns[side], workdir / "ab"[side], net.ike[side], name="ab"[side])
            c.add(conn)
            pair.append(stack.enter_context(c))
        yield pair[0], pair[1]


def assert_ping(net: PeerNet, count: int = 2) -> None:
    r = net.ping(0, count)
    assert r.returncode == 0, r.stdout + r.stderr


def settled(c: Charon) -> tuple[dict, dict]:
    return c.wait_established(IKE, CHILD, timeout=10)


def test_psk_tunnel_child_and_ike_rekey(net, tmp_path):
    psk = "interop-test-psk-0123456789"
    with charon_pair(net, tmp_path, (connection(net, 0, psk=psk), connection(net, 1, psk=psk))) as (a, b):
        assert a.list_sas() == [] and b.list_sas() == []
        # no tunnel, no route to the other inner address: the ping below is a real check
        assert net.ping(0, 1, wait=0.3).returncode != 0

        logs = a.initiate(CHILD, IKE)
        assert any("established" in line for line in logs)
        ike_a, child_a = settled(a)
        ike_b, child_b = settled(b)
        assert ike_a["initiator"] == "yes" and "initiator" not in ike_b
        assert ike_a["initiator-spi"] == ike_b["initiator-spi"] and ike_a["responder-spi"] == ike_b["responder-spi"]
        # encap = yes: IKE moved to 4500 and ESP is UDP-encapsulated
        assert ike_a["remote-port"] == "4500" and child_a["encap"] == "yes"
        assert (child_a["spi-in"], child_a["spi-out"]) == (child_b["spi-out"], child_b["spi-in"])
        assert child_a["encr-alg"] == "AES_GCM_16" and child_a["encr-keysize"] == "128"
        assert ike_a["dh-group"] == "ECP_256" and ike_a["prf-alg"] == "PRF_HMAC_SHA2_256"

        assert_ping(net, 2)
        _, child_b = settled(b)
        assert int(child_b["packets-in"]) >= 2  # the echo requests arrived through b's ESP SA

        # CHILD_SA rekey (CREATE_CHILD_SA with REKEY_SA): new SPIs on both sides, traffic still flows
        old_child = child_a["spi-in"]
        assert a.rekey_child(CHILD) == 1
        _, child_a = a.wait_for(lambda sas: (r := established(sas, IKE, CHILD)) and r[1]["spi-in"] != old_child
                                and r, what="child rekey")
        _, child_b = b.wait_for(lambda sas: (r := established(sas, IKE, CHILD)) and r[1]["spi-out"] != old_child
                                and r, what="child rekey (responder)")
        assert (child_a["spi-in"], child_a["spi-out"]) == (child_b["spi-out"], child_b["spi-in"])
        assert_ping(net, 2)

        # IKE_SA rekey: new IKE SPIs, the child moves over unchanged
        old_ike = ike_a["initiator-spi"]
        assert a.rekey_ike(IKE) == 1
        ike_a2, child_a2 = a.wait_for(
            lambda sas: (r := established(sas, IKE, CHILD)) and r[0]["initiator-spi"] != old_ike and r,
            what="IKE rekey")
        ike_b2, _ = b.wait_for(
            lambda sas: (r := established(sas, IKE, CHILD)) and r[0]["initiator-spi"] != old_ike and r,
            what="IKE rekey (responder)")
        assert ike_a2["initiator-spi"] == ike_b2["initiator-spi"]
        assert child_a2["spi-in"] == child_a["spi-in"]
        assert_ping(net, 2)

        a.terminate(ike=IKE)
        b.wait_for(lambda sas: not sas, timeout=5, what="responder to drop the SA")
        assert net.ping(0, 1, wait=0.3).returncode != 0
        pid = a.pid
    assert pid is not None and not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize(("kind", "san"), [("ecdsa", "ip"), ("rsa", "dns")])
def test_certificate_tunnel(net, tmp_path, kind, san):
    ca = make_ca(tmp_path / "pki")
    names = [net.ike[i] if san == "ip" else f"gw{i}.nsg.test" for i in (0, 1)]
    creds = [issue_cert(ca, tmp_path / "pki", kind=kind, **{san: names[i]}) for i in (0, 1)]
    assert [c.identity for c in creds] == names
    assert {oct(p.stat().st_mode & 0o777) for p in (creds[0].key, ca.credential.key)} == {"0o600"}
    conns = tuple(connection(net, i, auth="pubkey", cert=creds[i].cert, key=creds[i].key, cacerts=(ca.cert_path,),
                             local_id=creds[i].identity, remote_id=creds[1 - i].identity) for i in (0, 1))
    with charon_pair(net, tmp_path, conns) as (a, b):
        a.initiate(CHILD, IKE)
        ike_a, _ = settled(a)
        ike_b, _ = settled(b)
        assert (ike_a["remote-id"], ike_b["remote-id"]) == (names[1], names[0])
        assert_ping(net, 1)


def test_certificate_from_unknown_ca_is_refused(net, tmp_path):
    good, rogue = make_ca(tmp_path / "good", "good CA"), make_ca(tmp_path / "rogue", "rogue CA")
    cred_a = issue_cert(rogue, tmp_path / "rogue", ip=net.ike[0])
    cred_b = issue_cert(good, tmp_path / "good", ip=net.ike[1])
    conns = (connection(net, 0, auth="pubkey", cert=cred_a.cert, key=cred_a.key, cacerts=(good.cert_path,)),
             connection(net, 1, auth="pubkey", cert=cred_b.cert, key=cred_b.key, cacerts=(good.cert_path,)))
    with charon_pair(net, tmp_path, conns) as (a, b):
        with pytest.raises(CharonError, match="initiate failed"):
            a.initiate(CHILD, IKE, timeout=5)
        assert not [s for s in b.list_sas() if s.get("state") == "ESTABLISHED"]

"""Unsigned redirect information from a server the device cannot authenticate.

RFC 8572 section 7.3 lets a bootstrap server that receives signed-data-preferred answer with "either
signed data or unsigned redirect information", so a manufacturer's or an operator's redirect server
may legitimately send the latter. The device follows it as untrusted redirect information (RFC 8572
section 2.1): the trust anchors in it are discarded, so each server it names must either be
authenticated with a trust anchor the device already has (then it is a trusted bootstrap server), or
be talked to provisionally and hand over signed data (sections 5.3 and 5.4).

In every test the redirect carries the very trust anchor that would authenticate the next server:
the device must not use it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bootstrap import cms, sztp_data
from bootstrap.driver import Bootstrapper, Server
from bootstrap.errors import LocalBootstrapError
from bootstrap.identity import FileIdentityStore
from tests.unit.bootstrap_flow.sztp_stub import StubServer
from tests.unit.bootstrap_flow.test_flow import STAGES, _cert, serve


def redirect_to(w, port: int) -> sztp_data.RedirectInfo:
    anchor = cms.certs_only([w["ca"].cert])  # would authenticate the next server -- if it were believed
    return sztp_data.RedirectInfo((sztp_data.BootstrapServer("127.0.0.1", port, anchor),))


def box_trusts(w) -> None:
    """The box's own trust anchors for bootstrap servers (RFC 8572 section 5.1, item 4)."""
    (w["ident"] / "bootstrap-anchors.pem").write_bytes(w["ca"].cert.public_bytes(serialization.Encoding.PEM))


def stranger(w):
    """A TLS certificate for 127.0.0.1 under a CA nobody here knows: the redirect server's."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("stranger CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    paths = (w["tmp"] / "stranger.pem", w["tmp"] / "stranger.key")
    paths[0].write_bytes(_cert("redirector", key, ca, ca_key, ip="127.0.0.1").public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def _run(w, redirector: StubServer, runner, store: FileIdentityStore):
    try:
        return await Bootstrapper(store).run([Server(redirector.url, source="dhcp")])
    finally:
        await redirector.stop()
        await runner.cleanup()


def test_next_server_authenticated_with_an_anchor_the_box_has_is_trusted(world):
    box_trusts(world)

    async def main():
        runner, port, sztp = await serve(world)
        redirector = await StubServer(redirect_to(world, port), reporting_level="verbose").start(
            world, stranger(world))
        store = FileIdentityStore(world["ident"])
        doc = await _run(world, redirector, runner, store)
        assert doc.channel_url == "wss://127.0.0.1:9/channel" and store.ldevid() is not None
        assert "signed-data-preferred" in redirector.inputs[0] and redirector.reports == []
        # the next server was authenticated with the box's anchor: a trusted server, so it hears reports
        assert [p["type"] for p in sztp.progress["NSG-9"]] == STAGES

    asyncio.run(main())


def test_next_server_neither_authenticated_nor_signing_is_refused(world):
    async def main():
        onboarding = sztp_data.OnboardingInfo(configuration_handling="replace", configuration=json.dumps(
            {"channel_url": "wss://203.0.113.66/x", "est_url": "https://203.0.113.66",
             "trust_anchor": world["ca"].cert_pem.decode()}).encode())
        rogue = await StubServer(onboarding).start(world)
        redirector = await StubServer(redirect_to(world, rogue.port)).start(world, stranger(world))
        store = FileIdentityStore(world["ident"])
        try:
            with pytest.raises(LocalBootstrapError) as ei:
                await Bootstrapper(store).run([Server(redirector.url, source="dhcp")])
        finally:
            await redirector.stop()
            await rogue.stop()
        assert rogue.inputs, "the redirect was not followed"
        assert "signed-data-preferred" in rogue.inputs[0]  # it was asked for signed data ...
        assert rogue.reports == [] and store.ldevid() is None  # ... and got nothing for its unsigned data
        return str(ei.value), rogue.url

    msg, url = asyncio.run(main())
    assert f"{url}: unsigned onboarding information" in msg, msg
    assert "could not be authenticated" in msg and "RFC 8572" in msg, msg
    assert "trust anchor" in msg and "discarded" in msg, msg  # why the redirect's anchor did not count


def test_next_server_unauthenticated_but_signing_through_the_voucher_onboards(world):
    async def main():
        runner, port, sztp = await serve(world)
        redirector = await StubServer(redirect_to(world, port)).start(world, stranger(world))
        store = FileIdentityStore(world["ident"])
        doc = await _run(world, redirector, runner, store)
        assert doc.channel_url == "wss://127.0.0.1:9/channel" and store.ldevid() is not None
        assert sztp.counters["served"] == 1
        assert sztp.progress == {}  # provisional TLS: an untrusted server hears no reports (RFC 8572 5.3)

    asyncio.run(main())

"""Progress reports by the letter of RFC 8572, over real TLS on loopback: what the device reports,
when, and to whom -- and what the controller says to a report it cannot accept."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from bootstrap import cms, sztp_data
from bootstrap.driver import Bootstrapper, Server
from bootstrap.errors import BootstrapError, LocalBootstrapError
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from bootstrap.sztp import MEDIA, MODULE, REPORT_PATH
from controller.est_server import Pending
from tests.unit.bootstrap_flow.sztp_stub import StubServer
from tests.unit.bootstrap_flow.test_flow import MINIMAL_STAGES, STAGES, serve


def trusted(w, port: int) -> Server:
    return Server(f"https://127.0.0.1:{port}", (w["ca"].cert,), "test")


def test_bootstrap_initiated_follows_get_bootstrapping_data(world):
    """RFC 8572 section 7.3: bootstrap-initiated "indicates that the device just used the
    get-bootstrapping-data RPC" -- so it cannot come before it."""
    journal: list[str] = []

    async def main():
        runner, port, _ = await serve(world, journal=journal)
        try:
            await Bootstrapper(FileIdentityStore(world["ident"])).run([trusted(world, port)])
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert journal == ["get-bootstrapping-data", *(f"report:{s}" for s in STAGES)]


@pytest.mark.parametrize("level,expected", [("verbose", STAGES), ("minimal", MINIMAL_STAGES)])
def test_reporting_level_is_honoured(world, level, expected):
    """RFC 8572 section 7.3 reporting-level: "minimal" asks for just the reports RFC 8572 requires
    (section 5.6: bootstrap-initiated and a terminating one), "verbose" for more."""
    async def main():
        runner, port, sztp = await serve(world)
        sztp.reporting_level = level
        try:
            await Bootstrapper(FileIdentityStore(world["ident"])).run([trusted(world, port)])
        finally:
            await runner.cleanup()
        return [p["type"] for p in sztp.progress["NSG-9"]]

    assert asyncio.run(main()) == expected


def test_no_progress_reports_while_processing_redirect_information(world):
    """A trusted server that answers with redirect information hears nothing (RFC 8572 section 7.3,
    reporting-level: "Progress reports are not sent when processing redirect information"); the
    server it names, which onboards the device, hears the whole story."""
    async def main():
        runner, port, sztp = await serve(world)
        anchor = cms.certs_only([world["ca"].cert])
        redirector = await StubServer(sztp_data.RedirectInfo((sztp_data.BootstrapServer("127.0.0.1", port, anchor),)),
                                      reporting_level="verbose").start(world)
        try:
            await Bootstrapper(FileIdentityStore(world["ident"])).run(
                [Server(redirector.url, (world["ca"].cert,), "test")])
        finally:
            await redirector.stop()
            await runner.cleanup()
        assert redirector.inputs and "signed-data-preferred" not in redirector.inputs[0]  # it was trusted
        assert redirector.reports == []
        assert [p["type"] for p in sztp.progress["NSG-9"]] == STAGES

    asyncio.run(main())


def test_controller_answers_a_progress_type_outside_the_rfc_with_a_restconf_error(world):
    """Over the wire, as a conforming client would see it: 400 and an RFC 8040 section 7.1 errors
    document in application/yang-data+json, not a silent 204."""
    async def main():
        runner, port, sztp = await serve(world)
        ctx = FileIdentityStore(world["ident"]).tls_context("idevid", None)
        ctx.load_verify_locations(cadata=world["ca"].cert_pem.decode())
        body = json.dumps({f"{MODULE}:input": {"progress-type": "onboarding-initiated"}})
        try:
            async with aiohttp.ClientSession() as http, http.post(
                    f"https://127.0.0.1:{port}{REPORT_PATH}", data=body, ssl=ctx,
                    headers={"Content-Type": MEDIA, "Accept": MEDIA}) as r:
                status, ctype, doc = r.status, r.content_type, await r.json(content_type=None)
        finally:
            await runner.cleanup()
        assert (status, ctype) == (400, MEDIA)
        (err,) = doc["ietf-restconf:errors"]["error"]
        assert err["error-tag"] == "invalid-value" and "onboarding-initiated" in err["error-message"], err
        assert err["error-path"].endswith("progress-type"), err
        assert sztp.progress == {} and sztp.counters["bad_requests"] == 1

    asyncio.run(main())


def test_activation_wait_is_an_informational_report_and_giving_up_a_config_error(world):
    """Waiting for the activation code is not a progress type of its own: it is "informational" with
    a message (verbose only), and giving up on this server is the terminating "config-error"."""
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)

    async def main():
        runner, port, sztp = await serve(world, est_lookup=lambda s, _ctx: Pending(retry_after=30))
        try:
            with pytest.raises(BootstrapError, match="activation") as ei:
                await Bootstrapper(FileIdentityStore(world["ident"]), est_max_pending=1, sleep=nap).run(
                    [trusted(world, port)])
        finally:
            await runner.cleanup()
        return ei.value, sztp.progress["NSG-9"]

    exc, reports = asyncio.run(main())
    assert naps == [30.0]
    assert [p["type"] for p in reports] == ["bootstrap-initiated", "parsing-initiated", "parsing-complete",
                                            "config-initiated", "informational", "config-error"]
    assert "activation code" in reports[4]["message"] and "activation" in reports[5]["message"]
    assert exc.fault == "local"


@pytest.mark.parametrize("server_trusted", [False, True], ids=["untrusted-server", "trusted-server"])
def test_a_refused_idevid_is_named_not_just_a_connection_reset(world, tmp_path, server_trusted):
    """The controller does not know this IDevID's manufacturer and drops the TLS connection: the
    device says its client certificate was probably refused, and which one it presented."""
    other = make_manufacturer_ca(tmp_path / "other-mfg", name="someone else")
    ident = tmp_path / "stranger" / "identity"
    idevid = factory_init(ident, "NSG-9", other)

    async def main():
        runner, port, sztp = await serve(world)
        server = trusted(world, port) if server_trusted else Server(f"https://127.0.0.1:{port}")
        try:
            with pytest.raises(LocalBootstrapError) as ei:
                await Bootstrapper(FileIdentityStore(ident)).run([server])
        finally:
            await runner.cleanup()
        assert sztp.counters["served"] == 0
        return str(ei.value)

    msg = asyncio.run(main())
    assert "client certificate" in msg and "refused" in msg, msg
    assert "serialNumber=NSG-9" in msg and "CN=someone else" in msg, msg  # subject and issuer
    assert f"{idevid.serial_number:x}" in msg.lower(), msg


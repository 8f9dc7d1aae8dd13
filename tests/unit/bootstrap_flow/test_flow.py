"""Zero-touch over real TLS on loopback: an untrusted SZTP server hands signed onboarding data;
the device checks voucher, owner and signature, enrolls over EST and keeps its LDevID."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import stat

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bootstrap.driver import Bootstrapper, Server
from bootstrap.errors import LocalBootstrapError
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from controller.ca import CertificateAuthority
from controller.est_server import DeviceAuthorizer, Grant, add_est_routes, server_ssl_context
from controller.sztp_server import Manufacturer, Owner, SztpServer

NOW = datetime.datetime.now(datetime.UTC)


# What a trusted bootstrap server asking for reporting-level "verbose" hears, in order: only values of
# the progress-type enumeration (RFC 8572 section 7.3), bootstrap-initiated after get-bootstrapping-data.
STAGES = ["bootstrap-initiated", "parsing-initiated", "parsing-complete", "config-initiated", "config-complete",
          "bootstrap-complete"]
# ... and one asking for "minimal": just the reports RFC 8572 section 5.6 requires.
MINIMAL_STAGES = ["bootstrap-initiated", "bootstrap-complete"]


def _cert(subject, key, issuer_cert, issuer_key, *, ca=False, ip=None):
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_cert.subject if issuer_cert else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                              subject)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(hours=1)).not_valid_after(NOW + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def world(tmp_path):
    maker_key, maker = make_manufacturer_ca(tmp_path / "mfg")
    ident = tmp_path / "gw" / "identity"
    factory_init(ident, "NSG-9", (maker_key, maker))
    ca = CertificateAuthority.create()
    skey = ec.generate_private_key(ec.SECP256R1())
    scert = _cert("controller", skey, ca.cert, ca.key, ip="127.0.0.1")
    (tmp_path / "server.pem").write_bytes(scert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(skey.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    (tmp_path / "server.key").chmod(0o600)
    okey = ec.generate_private_key(ec.SECP256R1())
    ocert_ca = _cert("owner CA", okey, None, okey, ca=True)
    owner_key = ec.generate_private_key(ec.SECP256R1())
    owner = _cert("owner", owner_key, ocert_ca, okey)
    return {"tmp": tmp_path, "maker": (maker_key, maker), "ident": ident, "ca": ca,
            "owner": Owner(owner_key, owner, ocert_ca)}


async def serve(w, known=("NSG-9",), manufacturer=None, est_lookup=None, journal=None):
    """The controller's SZTP and EST routes on loopback TLS. ``journal``, if given, receives
    "get-bootstrapping-data" and "report:<progress-type>" (or "report-refused") in arrival order."""
    onboarding = {"channel_url": "wss://127.0.0.1:9/channel", "est_url": "https://127.0.0.1:{port}",
                  "trust_anchor": w["ca"].cert_pem.decode()}
    sztp_box: list = []

    @web.middleware
    async def record(request, handler):
        if journal is None or not request.path.startswith("/restconf/"):
            return await handler(request)
        if request.path.endswith(":get-bootstrapping-data"):
            journal.append("get-bootstrapping-data")
            return await handler(request)
        seen = sum(len(v) for v in sztp_box[0].progress.values())
        try:
            return await handler(request)
        finally:
            reports = [p for v in sztp_box[0].progress.values() for p in v]
            journal.append(f"report:{reports[-1]['type']}" if len(reports) > seen else "report-refused")

    app = web.Application(middlewares=[record])
    port_box = {}

    def doc(serial):
        if serial not in known:
            return None
        return {**onboarding, "est_url": onboarding["est_url"].format(port=port_box["port"])}

    mk, mc = manufacturer or w["maker"]
    sztp = SztpServer(w["owner"], Manufacturer(mk, mc), doc, (w["maker"][1],))
    sztp_box.append(sztp)
    sztp.add_routes(app)
    lookup = est_lookup or (lambda s, _ctx: Grant(datetime.timedelta(days=30)) if s in known else None)
    add_est_routes(app, w["ca"], DeviceAuthorizer(w["ca"], [w["maker"][1]], lookup))
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = server_ssl_context(w["tmp"] / "server.pem", w["tmp"] / "server.key", [w["maker"][1], w["ca"].cert])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port_box["port"] = site._server.sockets[0].getsockname()[1]
    return runner, port_box["port"], sztp


def test_untrusted_server_signed_onboarding_then_est(world):
    async def main():
        runner, port, sztp = await serve(world)
        try:
            store = FileIdentityStore(world["ident"])
            doc = await Bootstrapper(store).run([Server(f"https://127.0.0.1:{port}", source="dhcp")])
        finally:
            await runner.cleanup()
        assert doc.channel_url == "wss://127.0.0.1:9/channel"
        ldevid = store.ldevid()
        ldevid.verify_directly_issued_by(world["ca"].cert)
        assert ldevid.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "NSG-9"
        assert stat.S_IMODE((world["ident"] / "ldevid.key").stat().st_mode) == 0o600
        assert Bootstrapper(store).done() == doc
        assert sztp.counters["served"] == 1 and sztp.progress == {}  # no reports to an untrusted server

    asyncio.run(main())


def test_trusted_server_gets_progress_reports(world):
    async def main():
        runner, port, sztp = await serve(world)
        try:
            await Bootstrapper(FileIdentityStore(world["ident"])).run(
                [Server(f"https://127.0.0.1:{port}", (world["ca"].cert,), "redirect")])
        finally:
            await runner.cleanup()
        assert [p["type"] for p in sztp.progress["NSG-9"]] == STAGES

    asyncio.run(main())


def test_voucher_from_a_foreign_manufacturer_is_refused(world, tmp_path):
    other = make_manufacturer_ca(tmp_path / "other-mfg", name="someone else")

    async def main():
        runner, port, _ = await serve(world, manufacturer=other)
        try:
            with pytest.raises(LocalBootstrapError, match="no bootstrap server onboarded us") as ei:
                await Bootstrapper(FileIdentityStore(world["ident"])).run([Server(f"https://127.0.0.1:{port}")])
        finally:
            await runner.cleanup()
        assert "voucher" in str(ei.value).lower() or "chain" in str(ei.value).lower()
        assert FileIdentityStore(world["ident"]).ldevid() is None

    asyncio.run(main())


def test_unknown_device_gets_nothing(world):
    async def main():
        runner, port, sztp = await serve(world, known=())
        try:
            with pytest.raises(LocalBootstrapError, match="404"):
                await Bootstrapper(FileIdentityStore(world["ident"])).run([Server(f"https://127.0.0.1:{port}")])
        finally:
            await runner.cleanup()
        assert sztp.counters["refused"] == 1

    asyncio.run(main())


def test_rogue_server_with_unsigned_data_is_refused_and_the_next_one_used(world):
    """A rogue DHCP server names a rogue bootstrap server that hands out unsigned onboarding data:
    the device refuses it (RFC 8572: untrusted servers must sign) and goes on to the next server."""
    import base64
    import json as _json

    from bootstrap import sztp_data
    from bootstrap.sztp import GET_PATH, MEDIA, MODULE

    async def rogue(_request):
        info = sztp_data.OnboardingInfo(configuration=b'{"channel_url": "wss://203.0.113.66/x"}')
        out = {"conveyed-information": base64.b64encode(sztp_data.encode_unsigned_conveyed(info)).decode()}
        return web.Response(text=_json.dumps({f"{MODULE}:output": out}), content_type=MEDIA)

    async def main():
        app = web.Application()
        app.router.add_post(GET_PATH, rogue)
        rrunner = web.AppRunner(app)
        await rrunner.setup()
        ctx = server_ssl_context(world["tmp"] / "server.pem", world["tmp"] / "server.key", [world["maker"][1]])
        rsite = web.TCPSite(rrunner, "127.0.0.1", 0, ssl_context=ctx)
        await rsite.start()
        rport = rsite._server.sockets[0].getsockname()[1]
        runner, port, _ = await serve(world)
        try:
            doc = await Bootstrapper(FileIdentityStore(world["ident"])).run(
                [Server(f"https://127.0.0.1:{rport}", source="dhcp"), Server(f"https://127.0.0.1:{port}")])
        finally:
            await runner.cleanup()
            await rrunner.cleanup()
        assert doc.channel_url == "wss://127.0.0.1:9/channel"

    asyncio.run(main())


def test_controller_refuses_an_idevid_from_another_manufacturer(world, tmp_path):
    other = make_manufacturer_ca(tmp_path / "other-mfg", name="someone else")
    ident = tmp_path / "stranger" / "identity"
    factory_init(ident, "NSG-9", other)  # a known serial, but not our manufacturer's certificate

    async def main():
        runner, port, sztp = await serve(world)
        try:
            with pytest.raises(LocalBootstrapError):
                await Bootstrapper(FileIdentityStore(ident)).run([Server(f"https://127.0.0.1:{port}")])
        finally:
            await runner.cleanup()
        assert sztp.counters["served"] == 0

    asyncio.run(main())

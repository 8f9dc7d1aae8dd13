"""EST (RFC 7030) end to end on 127.0.0.1: the gateway's client against the controller's routes and CA,
over real TLS with client certificates; plus the CA's own rules and the client's reply parsing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email.utils
import ipaddress
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bootstrap import est
from controller.ca import CaError, CertificateAuthority, CsrRejected
from controller.est_server import (
    AuthContext,
    DeviceAuthorizer,
    Grant,
    Pending,
    add_est_routes,
    certs_only_body,
    server_ssl_context,
)

SERIAL = "NSG-0001"
OTHER = "NSG-0002"
UNKNOWN = "NSG-9999"
SYSTEM_IP = ipaddress.ip_address("198.19.255.1")
LIFETIME = datetime.timedelta(days=30)
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


# --- test PKI -------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1)).not_valid_after(_now() + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], *, serial: str | None = None,
              ip: str | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, serial or ip or "leaf")]
    if serial:
        attrs.insert(0, x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca[1].subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_now() - datetime.timedelta(hours=1))
               .not_valid_after(_now() + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                     ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return key, builder.sign(ca[0], hashes.SHA256())


def save(directory: Path, stem: str, key, cert: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Pki:
    dir: Path
    ca: CertificateAuthority  # the controller's EST CA
    manufacturer: tuple  # (key, cert) signing IDevIDs
    tls_ca_file: Path  # what the gateway trusts for the server
    server_files: tuple[Path, Path]
    untrusted_server_files: tuple[Path, Path]

    def idevid(self, serial: str, ca: tuple | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        return make_leaf(ca or self.manufacturer, serial=serial)

    def client_context(self, cred: tuple | None = None, stem: str = "client",
                       trust: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(trust or self.tls_ca_file))
        if cred is not None:
            ctx.load_cert_chain(*map(str, save(self.dir, stem, *cred)))
        return ctx

    def server_context(self, *, untrusted: bool = False) -> ssl.SSLContext:
        files = self.untrusted_server_files if untrusted else self.server_files
        return server_ssl_context(files[0], files[1], [self.manufacturer[1], self.ca.cert])


@pytest.fixture
def pki(tmp_path) -> Pki:
    tls_ca = make_ca("test TLS CA")
    tls_ca_file = tmp_path / "tls-ca.pem"
    tls_ca_file.write_bytes(tls_ca[1].public_bytes(serialization.Encoding.PEM))
    rogue_tls_ca = make_ca("rogue TLS CA")
    return Pki(dir=tmp_path, ca=CertificateAuthority.load_or_create(tmp_path / "est-ca"),
               manufacturer=make_ca("test manufacturer"), tls_ca_file=tls_ca_file,
               server_files=save(tmp_path, "server", *make_leaf(tls_ca, ip="127.0.0.1")),
               untrusted_server_files=save(tmp_path, "rogue-server", *make_leaf(rogue_tls_ca, ip="127.0.0.1")))


class Store:
    """The controller store stand-in: known serials, and a record of every authorize call."""

    def __init__(self, known: dict[str, Grant | Pending]):
        self.known = known
        self.lookups: list[str] = []

    def __call__(self, serial: str, ctx: AuthContext) -> Grant | Pending | None:
        self.lookups.append(serial)
        return self.known.get(serial)


def default_store() -> Store:
    return Store({SERIAL: Grant(LIFETIME, SYSTEM_IP), OTHER: Grant(LIFETIME)})


class CountingAuthorizer:
    def __init__(self, inner):
        self.inner = inner
        self.calls: list[AuthContext] = []

    async def __call__(self, ctx: AuthContext):
        self.calls.append(ctx)
        return await self.inner(ctx)


@contextlib.asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext):
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def est_server(pki: Pki, store: Store | None = None, *, untrusted: bool = False):
    authorizer = CountingAuthorizer(DeviceAuthorizer(pki.ca, [pki.manufacturer[1]], store or default_store()))
    app = web.Application()
    add_est_routes(app, pki.ca, authorizer)
    async with serve(app, pki.server_context(untrusted=untrusted)) as url:
        yield url, authorizer


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# --- the happy path -----------------------------------------------------------------------------


def test_enroll_with_idevid_then_reenroll_with_ldevid(pki):
    idevid = pki.idevid(SERIAL)

    async def scenario():
        async with est_server(pki) as (url, auth):
            anchors = await est.cacerts(url, pki.client_context())
            key = est.new_key()
            ldevid = await est.simple_enroll(url, key, SERIAL, ssl_context=pki.client_context(idevid, "idevid"),
                                             issuers=anchors)
            # Rekey: a new key, authenticated by the LDevID just issued.
            key2 = est.new_key()
            renewed = await est.simple_reenroll(url, key2, ldevid, issuers=anchors,
                                                ssl_context=pki.client_context((key, ldevid), "ldevid"))
            return anchors, key, ldevid, key2, renewed, auth

    anchors, key, ldevid, key2, renewed, auth = run(scenario())
    assert [c.fingerprint(hashes.SHA256()) for c in anchors] == [pki.ca.cert.fingerprint(hashes.SHA256())]
    assert ldevid.public_key() == key.public_key()
    assert est.subject_serial(ldevid.subject) == SERIAL
    assert ldevid.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SERIAL
    ldevid.verify_directly_issued_by(pki.ca.cert)
    san = ldevid.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [SYSTEM_IP]
    eku = ldevid.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH}  # a TLS client and an IKE identity; it serves no TLS
    assert ldevid.not_valid_after_utc - ldevid.not_valid_before_utc == LIFETIME + datetime.timedelta(minutes=5)

    assert renewed.public_key() == key2.public_key() != key.public_key()
    assert renewed.subject == ldevid.subject and renewed.serial_number != ldevid.serial_number
    assert [c.operation for c in auth.calls] == ["simpleenroll", "simplereenroll"]
    assert auth.calls[0].peer_cert.issuer == pki.manufacturer[1].subject
    assert auth.calls[1].peer_cert == ldevid


def test_renewal_keeps_the_key_when_asked(pki):
    async def scenario():
        async with est_server(pki) as (url, _):
            key = est.new_key()
            ldevid = await est.simple_enroll(url, key, SERIAL,
                                             ssl_context=pki.client_context(pki.idevid(SERIAL), "idevid"))
            again = await est.simple_reenroll(url, key, ldevid, ssl_context=pki.client_context((key, ldevid)))
            return key, again

    key, again = run(scenario())
    assert again.public_key() == key.public_key()


# --- refusals -------------------------------------------------------------------------------------


def enroll_error(pki: Pki, ctx: ssl.SSLContext, serial: str, store: Store | None = None, **kw):
    async def scenario():
        async with est_server(pki, store, **kw) as (url, auth):
            with pytest.raises(est.EstError) as info:
                await est.simple_enroll(url, est.new_key(), serial, ssl_context=ctx)
            return info.value, auth

    return run(scenario())


def test_unknown_serial_is_forbidden(pki):
    store = default_store()
    err, _ = enroll_error(pki, pki.client_context(pki.idevid(UNKNOWN)), UNKNOWN, store)
    assert (err.status, err.fault) == (403, "local")
    assert "not a known gateway" in err.reason
    assert store.lookups == [UNKNOWN]


def test_csr_for_another_serial_than_the_client_cert_is_forbidden(pki):
    # OTHER is a known gateway too, so only the mismatch can cause the refusal.
    err, _ = enroll_error(pki, pki.client_context(pki.idevid(SERIAL)), OTHER)
    assert (err.status, err.fault) == (403, "local")
    assert OTHER in err.reason and SERIAL in err.reason


def test_no_client_certificate_is_unauthorized(pki):
    err, auth = enroll_error(pki, pki.client_context(), SERIAL)
    assert (err.status, err.fault) == (401, "local")
    assert auth.calls[0].peer_cert is None


def test_client_certificate_from_an_unknown_ca_is_refused(pki):
    rogue = pki.idevid(SERIAL, ca=make_ca("rogue manufacturer"))
    err, auth = enroll_error(pki, pki.client_context(rogue), SERIAL)
    # The server's TLS layer refuses the chain in the handshake; no route ever sees the request.
    assert (err.status, err.fault) == (None, "remote")
    assert "client certificate" in err.reason
    assert auth.calls == []


def test_ldevid_cannot_first_enroll_and_idevid_cannot_reenroll(pki):
    idevid = pki.idevid(SERIAL)
    ldevid_key = est.new_key()
    csr = est.build_csr(ldevid_key, est.device_subject(SERIAL))
    ldevid = pki.ca.issue(csr, serial_expected=SERIAL, lifetime=LIFETIME)

    async def scenario():
        async with est_server(pki) as (url, _):
            with pytest.raises(est.EstError) as enroll_err:
                await est.simple_enroll(url, est.new_key(), SERIAL,
                                        ssl_context=pki.client_context((ldevid_key, ldevid), "ldevid"))
            with pytest.raises(est.EstError) as reenroll_err:
                await est.simple_reenroll(url, est.new_key(), ldevid,
                                          ssl_context=pki.client_context(idevid, "idevid"))
            return enroll_err.value, reenroll_err.value

    enroll_err, reenroll_err = run(scenario())
    assert enroll_err.status == 403 and "manufacturer" in enroll_err.reason
    assert reenroll_err.status == 403 and "this CA" in reenroll_err.reason


def test_bad_bodies_get_400_or_415_and_plain_text(pki):
    ctx = pki.client_context(pki.idevid(SERIAL))
    good = est.encode_csr(est.build_csr(est.new_key(), est.device_subject(SERIAL)))
    tampered_der = bytearray(base64.b64decode(good))
    tampered_der[-1] ^= 0x01  # last byte of the ECDSA signature
    cases = [
        (b"garbage, not base64 at all!", est.CT_PKCS10, 400),
        (base64.b64encode(b"\x30\x03\x02\x01\x00"), est.CT_PKCS10, 400),  # base64, but not a CSR
        (b"", est.CT_PKCS10, 400),
        (base64.b64encode(bytes(tampered_der)), est.CT_PKCS10, 400),
        (good, "application/octet-stream", 415),
        (b"A" * 20000, est.CT_PKCS10, 413),
    ]

    async def scenario():
        out = []
        async with est_server(pki) as (url, _), aiohttp.ClientSession() as session:
            for body, ctype, _ in cases:
                async with session.post(f"{url}/.well-known/est/simpleenroll", data=body, ssl=ctx,
                                        headers={"Content-Type": ctype}) as resp:
                    out.append((resp.status, resp.content_type, await resp.text()))
        return out

    for (_, _, want), (status, ctype, text) in zip(cases, run(scenario()), strict=True):
        assert status == want, text
        assert ctype == "text/plain"
        assert "Traceback" not in text and text.count("\n") == 1


def test_untrusted_server_is_never_talked_to(pki):
    err, auth = enroll_error(pki, pki.client_context(pki.idevid(SERIAL)), SERIAL, untrusted=True)
    assert (err.fault, err.status) == ("remote", None)
    assert "not trusted" in err.reason
    assert auth.calls == []


def test_client_refuses_a_context_that_does_not_verify_the_server(pki):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # a server-side context: verifies nobody
    with pytest.raises(est.EstError) as info:
        run(est.cacerts("https://127.0.0.1:9", ctx))
    assert info.value.fault == "local"


def test_unreachable_server_is_a_remote_fault(pki):
    async def scenario():
        async with serve(web.Application(), pki.server_context()) as url:
            pass  # the port is closed again
        return await est.cacerts(url, pki.client_context())

    with pytest.raises(est.EstError) as info:
        run(scenario())
    assert info.value.fault == "remote"


# --- 202 + Retry-After (RFC 7030 4.2.3) -------------------------------------------------------------


def test_pending_decision_is_retried_after_the_servers_delay(pki):
    decisions = [Pending(7), Pending(3)]

    def lookup(serial, ctx):
        return decisions.pop(0) if decisions else Grant(LIFETIME)

    waits: list[float] = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    async def scenario():
        async with est_server(pki, lookup) as (url, auth):
            key = est.new_key()
            cert = await est.simple_enroll(url, key, SERIAL, sleep=fake_sleep,
                                           ssl_context=pki.client_context(pki.idevid(SERIAL)))
            return key, cert, auth

    key, cert, auth = run(scenario())
    assert waits == [7.0, 3.0]
    assert len(auth.calls) == 3
    assert cert.public_key() == key.public_key()


def test_retry_after_http_date_and_same_request_resent(pki):
    """A stub server: 202 with an HTTP-date first, then the certificate for the request it got."""
    bodies: list[bytes] = []

    async def stub(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        if len(bodies) == 1:
            when = email.utils.format_datetime(_now() + datetime.timedelta(seconds=30), usegmt=True)
            return web.Response(status=202, text="later", headers={"Retry-After": when})
        csr = x509.load_der_x509_csr(base64.b64decode(bodies[-1]))
        cert = pki.ca.issue(csr, serial_expected=SERIAL, lifetime=LIFETIME)
        # One long base64 line this time: clients must read both forms (RFC 8951).
        body = b"".join(certs_only_body([pki.ca.cert, cert]).split())
        return web.Response(body=body, headers={"Content-Type": "application/pkcs7-mime; smime-type=certs-only"})

    waits: list[float] = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    async def scenario():
        app = web.Application()
        app.router.add_post("/.well-known/est/simpleenroll", stub)
        async with serve(app, pki.server_context()) as url:
            key = est.new_key()
            return key, await est.simple_enroll(url, key, SERIAL, ssl_context=pki.client_context(), sleep=fake_sleep)

    key, cert = run(scenario())
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert len(waits) == 1 and 25 <= waits[0] <= 31
    assert cert.public_key() == key.public_key()  # picked ours out of a reply that also holds the CA


def test_endless_pending_gives_up(pki):
    waits: list[float] = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    async def scenario():
        async with est_server(pki, Store({SERIAL: Pending(1)})) as (url, _):
            with pytest.raises(est.EstError) as info:
                await est.simple_enroll(url, est.new_key(), SERIAL, max_pending=3, sleep=fake_sleep,
                                        ssl_context=pki.client_context(pki.idevid(SERIAL)))
            return info.value

    err = run(scenario())
    assert (err.status, err.fault) == (202, "remote")
    assert waits == [1.0, 1.0, 1.0]


# --- the CA ---------------------------------------------------------------------------------------


def test_ca_files_are_private_and_reload_to_the_same_ca(tmp_path):
    directory = tmp_path / "ca"
    ca = CertificateAuthority.load_or_create(directory)
    key_file = directory / "ca.key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert not list(directory.glob("*.tmp"))
    again = CertificateAuthority.load_or_create(directory)
    assert again.cert == ca.cert and again.key.public_key() == ca.key.public_key()

    key_file.chmod(0o644)
    with pytest.raises(CaError, match="0600"):
        CertificateAuthority.load_or_create(directory)
    key_file.chmod(0o600)
    (directory / "ca.crt.pem").unlink()
    with pytest.raises(CaError, match="incomplete"):
        CertificateAuthority.load_or_create(directory)


def test_ca_copies_only_key_and_serial_from_the_request():
    ca = CertificateAuthority.create(now=NOW)
    key = est.new_key()
    greedy = (x509.CertificateSigningRequestBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, SERIAL),
                                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp"),
                                       x509.NameAttribute(NameOID.COMMON_NAME, "controller")]))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("controller.example")]), critical=False)
              .sign(key, hashes.SHA256()))
    cert = ca.issue(greedy, serial_expected=SERIAL, lifetime=LIFETIME, san_ip="198.19.255.9", now=NOW)
    assert cert.subject == est.device_subject(SERIAL)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.IPAddress(ipaddress.ip_address("198.19.255.9"))]
    assert cert.not_valid_after_utc == NOW + LIFETIME
    assert ca.issued(cert, now=NOW) and not ca.issued(cert, now=NOW + 2 * LIFETIME)
    # Never beyond the CA's own end of life.
    long = ca.issue(greedy, serial_expected=SERIAL, lifetime=datetime.timedelta(days=100 * 365), now=NOW)
    assert long.not_valid_after_utc == ca.cert.not_valid_after_utc


@pytest.mark.parametrize(("case", "code"), [("serial", "serial"), ("no-serial", "serial"), ("signature", "signature"),
                                            ("weak-rsa", "key"), ("garbage", "encoding")])
def test_ca_rejects(case, code):
    ca = CertificateAuthority.create()
    key = est.new_key()
    if case == "serial":
        csr = est.build_csr(key, est.device_subject(OTHER)).public_bytes(serialization.Encoding.DER)
    elif case == "no-serial":
        csr = est.build_csr(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERIAL)]))
    elif case == "signature":
        der = bytearray(est.build_csr(key, est.device_subject(SERIAL)).public_bytes(serialization.Encoding.DER))
        der[-1] ^= 0x01
        csr = bytes(der)
    elif case == "weak-rsa":
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        csr = est.build_csr(weak, est.device_subject(SERIAL))
    else:
        csr = b"\x30\x00"
    with pytest.raises(CsrRejected) as info:
        ca.issue(csr, serial_expected=SERIAL, lifetime=LIFETIME)
    assert info.value.code == code


def test_serial_outside_printablestring_round_trips():
    ca = CertificateAuthority.create()
    key = est.new_key()
    odd = "box_07@lab"
    cert = ca.issue(est.build_csr(key, est.device_subject(odd)), serial_expected=odd, lifetime=LIFETIME)
    assert est.subject_serial(cert.subject) == odd
    assert est.pick_issued([cert], key=key, serial=odd, issuers=[ca.cert]) == cert


# --- the client's reply checks (sans-IO) -----------------------------------------------------------


def test_reply_parsing_and_renew_at():
    ca = CertificateAuthority.create(now=NOW)
    key = est.new_key()
    cert = ca.issue(est.build_csr(key, est.device_subject(SERIAL)), serial_expected=SERIAL, lifetime=LIFETIME,
                    now=NOW)
    body = certs_only_body([cert])
    headers = {"content-type": "application/pkcs7-mime; smime-type=certs-only"}
    ok = est.interpret_enroll_response(200, headers, body, now=NOW, key=key, serial=SERIAL, issuers=[ca.cert])
    assert ok == est.Issued(cert)
    assert est.decode_certs_only(b"".join(body.split())) == est.decode_certs_only(body) == [cert]

    def fails(**kw):
        args = {"status": 200, "headers": headers, "body": body, "now": NOW, "key": key, "serial": SERIAL} | kw
        with pytest.raises(est.EstError) as info:
            est.interpret_enroll_response(args.pop("status"), args.pop("headers"), args.pop("body"), **args)
        return info.value

    assert fails(key=est.new_key()).fault == "remote"  # not our key
    assert fails(serial=OTHER).fault == "remote"
    assert fails(issuers=[CertificateAuthority.create().cert]).fault == "remote"
    assert fails(headers={"content-type": "text/html"}).fault == "remote"
    assert fails(body=b"<html>").fault == "remote"
    assert fails(now=NOW + 2 * LIFETIME).fault == "remote"
    e500 = fails(status=500, body=b"CA offline\n")
    assert (e500.fault, e500.status) == ("remote", 500) and "CA offline" in e500.reason
    assert fails(status=403).fault == "local"

    pending = est.interpret_enroll_response(202, {"retry-after": "120"}, b"", now=NOW, key=key, serial=SERIAL)
    assert pending == est.RetryLater(120.0)
    assert est.parse_retry_after(None, NOW) == est.DEFAULT_RETRY_AFTER
    assert est.parse_retry_after("999999", NOW) == est.MAX_RETRY_AFTER

    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert est.renew_at(cert) == start + (end - start) * 2 / 3
    assert start < est.renew_at(cert) < end


def test_request_format():
    key = est.new_key()
    body = est.encode_csr(est.build_csr(key, est.device_subject(SERIAL)))
    assert b"\n" not in body  # base64 in one line (RFC 4648 section 4); servers read any layout
    csr = x509.load_der_x509_csr(base64.b64decode(body))
    assert csr.is_signature_valid and csr.public_key() == key.public_key()
    assert csr.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == SERIAL
    assert est.enroll_headers()["Content-Type"] == "application/pkcs10"
    with pytest.raises(est.EstError) as info:
        est.device_subject("")
    assert info.value.fault == "local"


def test_async_lookup_sees_http_basic_credentials(pki):
    """An activation code can ride along as HTTP Basic (RFC 7030 3.2.3) and gate the decision."""
    seen = []

    async def lookup(serial, ctx):
        seen.append(ctx.basic)
        return Grant(LIFETIME) if ctx.basic == (serial, "s3cret") else Pending(1)

    async def no_wait(seconds):
        return None

    async def scenario():
        async with est_server(pki, lookup) as (url, _):
            ctx = pki.client_context(pki.idevid(SERIAL))
            with pytest.raises(est.EstError) as info:
                await est.simple_enroll(url, est.new_key(), SERIAL, ssl_context=ctx, max_pending=0, sleep=no_wait)
            cert = await est.simple_enroll(url, est.new_key(), SERIAL, ssl_context=ctx, basic=(SERIAL, "s3cret"))
            return info.value, cert

    err, cert = run(scenario())
    assert err.status == 202
    assert est.subject_serial(cert.subject) == SERIAL
    assert seen == [None, (SERIAL, "s3cret")]

"""Issue 22 section 2, RFC 7030 4.2.2: a re-enrollment request names the same Subject and SubjectAltName as
the certificate being renewed. The server refuses anything else (400, saying what differs) although its
CA would replace both anyway; our client sends exactly the current certificate's subject and SAN."""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from bootstrap import est
from controller.est_server import certs_only_body
from tests.unit.est.test_est import LIFETIME, OTHER, SERIAL, SYSTEM_IP, est_server, run, serve


def csr_with(key, subject: x509.Name, san: list[x509.GeneralName] | None) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return est.encode_csr(b.sign(key, hashes.SHA256()))


def renamed(serial: str, cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(cert: x509.Certificate) -> list[x509.GeneralName] | None:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return None


def reenroll_attempts(pki, serial: str, bodies: dict[str, bytes | None]) -> dict[str, tuple[int, str]]:
    """Enroll ``serial`` with its IDevID, then POST each body to /simplereenroll with the LDevID
    (None: the request that repeats the LDevID's subject and SAN, made from the certificate)."""

    async def scenario():
        out = {}
        async with est_server(pki) as (url, _):
            key = est.new_key()
            ldevid = await est.simple_enroll(url, key, serial,
                                             ssl_context=pki.client_context(pki.idevid(serial), "idevid"))
            ctx = pki.client_context((key, ldevid), "ldevid")
            async with aiohttp.ClientSession() as session:
                for name, given in bodies.items():
                    body = given if given is not None else csr_with(est.new_key(), ldevid.subject, _san(ldevid))
                    async with session.post(f"{url}/.well-known/est/simplereenroll", data=body, ssl=ctx,
                                            headers={"Content-Type": est.CT_PKCS10}) as resp:
                        out[name] = resp.status, await resp.text()
        return out

    return run(scenario())


def test_reenroll_with_another_subject_or_san_is_refused(pki):
    ip = x509.IPAddress(SYSTEM_IP)
    other_ip = x509.IPAddress(ipaddress.ip_address("198.19.255.77"))
    k = est.new_key()
    got = reenroll_attempts(pki, SERIAL, {
        "cn changed, san dropped": csr_with(k, renamed(SERIAL, "not-the-box"), None),
        "cn changed": csr_with(k, renamed(SERIAL, "not-the-box"), [ip]),
        "cn dropped": csr_with(k, x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, SERIAL)]), [ip]),
        "attributes reordered": csr_with(k, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERIAL),
                                                       x509.NameAttribute(NameOID.SERIAL_NUMBER, SERIAL)]), [ip]),
        "san dropped": csr_with(k, est.device_subject(SERIAL), None),
        "san changed": csr_with(k, est.device_subject(SERIAL), [other_ip]),
        "san added to": csr_with(k, est.device_subject(SERIAL), [ip, x509.DNSName("box.example")]),
        "the same": None,
    })
    for case in ("cn changed, san dropped", "cn changed", "cn dropped", "attributes reordered"):
        status, text = got[case]
        assert status == 400 and "Subject" in text and "4.2.2" in text, (case, text)
    for case in ("san dropped", "san changed", "san added to"):
        status, text = got[case]
        assert status == 400 and "SubjectAltName" in text and "4.2.2" in text, (case, text)
    assert got["the same"][0] == 200, got["the same"]
    assert text.count("\n") == 1 and "Traceback" not in text


def test_reenroll_of_a_certificate_without_san_must_not_add_one(pki):
    got = reenroll_attempts(pki, OTHER, {  # OTHER's grant names no system IP: its LDevID has no SAN
        "san added": csr_with(est.new_key(), est.device_subject(OTHER), [x509.IPAddress(SYSTEM_IP)]),
        "the same": None,
    })
    assert got["san added"][0] == 400 and "SubjectAltName" in got["san added"][1]
    assert got["the same"][0] == 200


def test_client_reenrolls_with_the_current_subject_and_san(pki):
    """What our client puts in the request (the CA would hide a mistake: it writes its own anyway)."""
    current_key = est.new_key()
    odd_subject = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, SERIAL),
                             x509.NameAttribute(NameOID.COMMON_NAME, "gateway b1"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme")])
    san = x509.SubjectAlternativeName([x509.IPAddress(SYSTEM_IP), x509.DNSName("b1.example")])
    current = pki.ca.issue(est.build_csr(current_key, est.device_subject(SERIAL)), serial_expected=SERIAL,
                           lifetime=LIFETIME, san_ip=SYSTEM_IP)
    # a certificate whose subject and SAN our CA would not write: the client must still repeat them
    current = (x509.CertificateBuilder().subject_name(odd_subject).issuer_name(current.issuer)
               .public_key(current_key.public_key()).serial_number(current.serial_number)
               .not_valid_before(current.not_valid_before_utc).not_valid_after(current.not_valid_after_utc)
               .add_extension(san, critical=False).sign(pki.ca.key, hashes.SHA256()))
    seen: list[x509.CertificateSigningRequest] = []

    async def stub(request: web.Request) -> web.Response:
        csr = est.x509.load_der_x509_csr(est.decode_base64(await request.read(), "request"))
        seen.append(csr)
        cert = pki.ca.issue(csr, serial_expected=SERIAL, lifetime=LIFETIME, san_ip=SYSTEM_IP)
        return web.Response(body=certs_only_body([cert]),
                            headers={"Content-Type": "application/pkcs7-mime; smime-type=certs-only"})

    async def scenario():
        app = web.Application()
        app.router.add_post("/.well-known/est/simplereenroll", stub)
        async with serve(app, pki.server_context()) as url:
            return await est.simple_reenroll(url, est.new_key(), current, ssl_context=pki.client_context())

    run(scenario())
    (csr,) = seen
    assert csr.subject == current.subject
    assert [a.oid for a in csr.subject] == [a.oid for a in current.subject]  # the order too
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == san
    assert csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        != current_key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("with_san", [True, False])
def test_client_reenrolls_through_the_server(pki, with_san):
    """Our client's renewal passes the server's check, with and without a SAN in the current LDevID."""
    serial = SERIAL if with_san else OTHER

    async def scenario():
        async with est_server(pki) as (url, _):
            key = est.new_key()
            ldevid = await est.simple_enroll(url, key, serial,
                                             ssl_context=pki.client_context(pki.idevid(serial), "idevid"))
            renewed = await est.simple_reenroll(url, est.new_key(), ldevid,
                                                ssl_context=pki.client_context((key, ldevid), "ldevid"))
            return ldevid, renewed

    ldevid, renewed = run(scenario())
    assert renewed.subject == ldevid.subject and renewed.serial_number != ldevid.serial_number

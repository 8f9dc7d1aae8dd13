"""EST server routes (RFC 7030) for the controller's CA: /cacerts, /simpleenroll, /simplereenroll.

Who may enroll is decided by a callback the controller wires to its store:

    authorize(AuthContext(operation, peer_cert, basic)) -> AuthDecision | Pending      (or raise EstDenied)

``peer_cert`` is the TLS client certificate (RFC 7030 3.3.2), already chain-verified by the TLS
layer against the client CAs of the server's ssl context (see server_ssl_context()). The callback
says which device serial the client speaks for and what to put in its certificate; the CA then
insists that the request names exactly that serial (controller.ca). DeviceAuthorizer implements
the usual policy: first enrollment with a manufacturer IDevID of a known gateway, renewal with a
current LDevID from our own CA.

Replies: 200 + base64 certs-only (4.1.3, 4.2.3); 202 + Retry-After while an operator has yet to
approve (4.2.3); 400 for a request that does not decode or verify; 401 without a usable client
certificate; 403 for a client not allowed this serial; 413/415 for wrong sizes and media types.
Error bodies are one line of plain text (4.2.3) and never carry a traceback.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import inspect
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from controller.ca import CertificateAuthority, CsrRejected, subject_serial

log = logging.getLogger(__name__)

# --- RFC 7030 constants -------------------------------------------------------------------------
WELL_KNOWN = "/.well-known/est"  # 3.2.2
OP_SIMPLEENROLL = "simpleenroll"  # 4.2.1
OP_SIMPLEREENROLL = "simplereenroll"  # 4.2.2
CT_PKCS10 = "application/pkcs10"
CT_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"

# --- tuning ---------------------------------------------------------------------------------------
MAX_CSR_BODY = 16 * 1024  # base64 of an RSA-4096 request is ~2 KiB

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AuthContext:
    operation: str  # OP_SIMPLEENROLL or OP_SIMPLEREENROLL
    peer_cert: x509.Certificate | None  # TLS client certificate, chain already verified by TLS
    basic: tuple[str, str] | None = None  # HTTP Basic (user, password) if sent (3.2.3), e.g. an activation code


@dataclass(frozen=True)
class AuthDecision:
    serial: str  # the device serial the request must name
    lifetime: datetime.timedelta
    san_ip: IPAddress | None = None  # the gateway's system IP, its IKE identity


@dataclass(frozen=True)
class Pending:
    """Not decided yet (e.g. waiting for an operator): answer 202 with Retry-After (4.2.3)."""

    retry_after: int = 60


class EstDenied(Exception):
    """Raised by an authorize callback: 401 (no usable client identity) or 403 (identity not allowed)."""

    def __init__(self, status: int, reason: str):
        if status not in (401, 403):
            raise ValueError(f"EstDenied status must be 401 or 403, not {status}")
        super().__init__(reason)
        self.status = status
        self.reason = reason


Authorize = Callable[[AuthContext], "AuthDecision | Pending | Awaitable[AuthDecision | Pending]"]


class EstHttpError(Exception):
    """A request this server refuses; carries the HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


# --- sans-IO: request decoding and issuing -------------------------------------------------------

_CSR_STATUS = {"encoding": 400, "signature": 400, "key": 400, "serial": 403}


def decode_csr_body(content_type: str | None, body: bytes) -> x509.CertificateSigningRequest:
    """The PKCS#10 request in an enroll body: base64 of DER (4.2.1), with or without line breaks
    (RFC 8951 section 3; a Content-Transfer-Encoding header changes nothing and is ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != CT_PKCS10:
        raise EstHttpError(415, f"Content-Type must be {CT_PKCS10}, not {content_type or 'absent'}")
    compact = b"".join(body.split())
    if not compact:
        raise EstHttpError(400, "empty request body; expected a base64 PKCS#10 request")
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise EstHttpError(400, "request body is not base64") from None
    try:
        return x509.load_der_x509_csr(der)
    except ValueError:
        raise EstHttpError(400, "request body is not a DER PKCS#10 certification request") from None


def certs_only_body(certs: Sequence[x509.Certificate]) -> bytes:
    """base64 (76-column lines) of a degenerate CMS SignedData holding ``certs`` (4.1.3, 4.2.3)."""
    return base64.encodebytes(pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER))


def issue_for(ca: CertificateAuthority, decision: AuthDecision, csr: x509.CertificateSigningRequest,
              now: datetime.datetime | None = None, on_issued: OnIssued | None = None) -> bytes:
    """Issue under ``decision`` and return the 200 reply body; CSR problems become EstHttpError.
    ``on_issued(device serial, certificate)`` records it (revocation needs to know what exists)."""
    try:
        cert = ca.issue(csr, serial_expected=decision.serial, lifetime=decision.lifetime, san_ip=decision.san_ip,
                        now=now)
    except CsrRejected as exc:
        raise EstHttpError(_CSR_STATUS.get(exc.code, 400), exc.reason) from None
    log.info("EST issued certificate %x for serial %s until %s", cert.serial_number, decision.serial,
             cert.not_valid_after_utc.isoformat())
    if on_issued is not None:
        on_issued(decision.serial, cert)
    return certs_only_body([cert])


# --- the usual policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What the store says about a known gateway."""

    lifetime: datetime.timedelta
    san_ip: IPAddress | None = None


OnIssued = Callable[[str, x509.Certificate], None]
Lookup = Callable[[str, AuthContext], "Grant | Pending | Awaitable[Grant | Pending | None] | None"]


def _directly_issued(cert: x509.Certificate, ca: x509.Certificate, now: datetime.datetime) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


class DeviceAuthorizer:
    """simpleenroll: the client certificate is an IDevID signed by one of ``manufacturer_cas`` and
    its serial is a gateway ``lookup`` knows. simplereenroll: the client certificate is a current
    LDevID from ``ca``, and ``lookup`` still knows its serial. The signature checks repeat what TLS
    did, so the policy holds even if the TLS context trusts more CAs than these.

    ``lookup(serial, ctx)`` returns a Grant, Pending (e.g. an activation code is still missing: see
    ``ctx.basic``) or None for "not a gateway of ours"; it may be a coroutine function."""

    def __init__(self, ca: CertificateAuthority, manufacturer_cas: Sequence[x509.Certificate], lookup: Lookup,
                 revoked: Callable[[int], bool] = lambda _serial: False):
        self._ca = ca
        self._revoked = revoked
        self._manufacturers = tuple(manufacturer_cas)
        self._lookup = lookup

    async def __call__(self, ctx: AuthContext) -> AuthDecision | Pending:
        cert = ctx.peer_cert
        if cert is None:
            raise EstDenied(401, "a TLS client certificate is required (IDevID to enroll, LDevID to reenroll)")
        now = datetime.datetime.now(datetime.UTC)
        if ctx.operation == OP_SIMPLEENROLL:
            if not any(_directly_issued(cert, m, now) for m in self._manufacturers):
                raise EstDenied(403, "client certificate is not an IDevID from a trusted manufacturer")
        elif ctx.operation == OP_SIMPLEREENROLL:
            if not self._ca.issued(cert, now=now):
                raise EstDenied(403, "client certificate is not a current certificate from this CA")
            if self._revoked(cert.serial_number):
                raise EstDenied(403, "client certificate was revoked (the gateway was deleted or replaced)")
        else:
            raise EstDenied(403, f"operation {ctx.operation!r} is not offered")
        serial = subject_serial(cert.subject)
        if serial is None:
            raise EstDenied(403, "client certificate has no single serialNumber in its subject")
        grant = self._lookup(serial, ctx)
        if inspect.isawaitable(grant):
            grant = await grant
        if grant is None:
            raise EstDenied(403, f"serial {serial!r} is not a known gateway")
        if isinstance(grant, Pending):
            return grant
        return AuthDecision(serial=serial, lifetime=grant.lifetime, san_ip=grant.san_ip)


# --- TLS ------------------------------------------------------------------------------------------


def server_ssl_context(certfile: Path, keyfile: Path, client_cas: Sequence[x509.Certificate]) -> ssl.SSLContext:
    """A server context asking for (not demanding) a client certificate from ``client_cas``
    (manufacturer CAs for IDevIDs, our CA for LDevIDs). A client certificate that does not verify
    fails the handshake; no certificate at all reaches the routes, which answer 401."""
    if not client_cas:
        raise ValueError("client_cas must name at least one CA")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996 updates RFC 7030: no TLS 1.0/1.1
    ctx.load_cert_chain(str(certfile), str(keyfile))
    ctx.load_verify_locations(cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in client_cas))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The verified TLS client certificate of ``request``'s connection, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None  # TLS accepted it, so this does not happen; treat as no certificate


# --- aiohttp routes -------------------------------------------------------------------------------


def _text(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    line = " ".join(reason.split())[:300]
    return web.Response(status=status, text=line + "\n", content_type="text/plain", headers=headers)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise EstHttpError(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(4096):
        size += len(chunk)
        if size > limit:
            raise EstHttpError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _basic(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    # RFC 7617 section 2: "Basic" SP base64(user-id ":" password); other schemes are not ours.
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise EstHttpError(401, f"Authorization scheme {scheme!r} is not supported (TLS client certificates, "
                                "optionally HTTP Basic)")
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        raise EstHttpError(401, "malformed HTTP Basic credentials") from None
    if not sep:
        raise EstHttpError(401, "malformed HTTP Basic credentials")
    return user, password


def add_est_routes(app: web.Application, ca: CertificateAuthority, authorize: Authorize, *,
                   prefix: str = WELL_KNOWN, on_issued: OnIssued | None = None) -> None:
    """Mount GET {prefix}/cacerts and POST {prefix}/simpleenroll, {prefix}/simplereenroll on ``app``."""

    async def get_cacerts(request: web.Request) -> web.Response:
        # 4.1.2: no client authentication for /cacerts; the client authenticates us by TLS.
        return web.Response(body=certs_only_body([ca.cert]), headers={"Content-Type": CT_CERTS_ONLY})

    def enroll_handler(operation: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            peer = peer_certificate(request)
            who = subject_serial(peer.subject) if peer is not None else None
            try:
                ctx = AuthContext(operation, peer, _basic(request))
                decision = authorize(ctx)
                if inspect.isawaitable(decision):
                    decision = await decision
                if isinstance(decision, Pending):
                    log.info("EST %s for %s pending; retry after %d s", operation, who, decision.retry_after)
                    return _text(202, "request accepted, decision pending",
                                 {"Retry-After": str(max(1, int(decision.retry_after)))})
                if not isinstance(decision, AuthDecision):
                    raise TypeError(f"authorize returned {type(decision).__name__}, not AuthDecision or Pending")
                body = await _read_limited(request, MAX_CSR_BODY)
                csr = decode_csr_body(request.headers.get("Content-Type"), body)
                reply = issue_for(ca, decision, csr, on_issued=on_issued)
            except EstDenied as exc:
                log.warning("EST %s refused (%d) for client %s: %s", operation, exc.status, _describe(peer),
                            exc.reason)
                return _text(exc.status, exc.reason)
            except EstHttpError as exc:
                log.warning("EST %s refused (%d) for client %s: %s", operation, exc.status, _describe(peer),
                            exc.reason)
                return _text(exc.status, exc.reason)
            return web.Response(body=reply, headers={"Content-Type": CT_CERTS_ONLY})

        return handler

    app.router.add_get(f"{prefix}/cacerts", get_cacerts)
    app.router.add_post(f"{prefix}/{OP_SIMPLEENROLL}", enroll_handler(OP_SIMPLEENROLL))
    app.router.add_post(f"{prefix}/{OP_SIMPLEREENROLL}", enroll_handler(OP_SIMPLEREENROLL))


def _describe(cert: x509.Certificate | None) -> str:
    if cert is None:
        return "(no certificate)"
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = cn[0].value if cn else cert.subject.rfc4514_string()
    return f"{name!s} (issuer {cert.issuer.rfc4514_string()})"

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
approve (4.2.3); 400 for a request that does not decode or verify, or a re-enrollment whose Subject or
SubjectAltName is not the current certificate's (4.2.2); 401 without a usable client certificate;
403 for a client not allowed this serial; 413/415 for wrong sizes and media types. Error bodies are one
line of plain text (4.2.3) and never carry a traceback. Base64 goes out without line breaks (RFC 4648
section 4: strongSwan's pki reads nothing else) and is read in any layout (RFC 8951 section 3).

TLS: TlsSite serves the routes so that a client certificate the handshake refuses gets its alert
(unknown_ca, bad_certificate, ...) and is counted and logged with the subject it presented.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import inspect
import ipaddress
import logging
import ssl
import time
import weakref
from asyncio import sslproto
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
from controller.safe_text import safe
from controller.site_guard import CONN_INFO, SiteGuard

log = logging.getLogger(__name__)

# --- RFC 7030 constants -------------------------------------------------------------------------
WELL_KNOWN = "/.well-known/est"  # 3.2.2
OP_SIMPLEENROLL = "simpleenroll"  # 4.2.1
OP_SIMPLEREENROLL = "simplereenroll"  # 4.2.2
CT_PKCS10 = "application/pkcs10"
CT_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"

# --- tuning ---------------------------------------------------------------------------------------
MAX_CSR_BODY = 16 * 1024  # base64 of an RSA-4096 request is ~2 KiB
REFUSAL_LOG_INTERVAL_S = 60.0  # a refused TLS client certificate: one log line per subject per minute ...
MAX_REFUSAL_LINES = 20  # ... and this many per minute in all
MAX_REFUSED_SUBJECTS = 1024  # subjects remembered with their refusal counts

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
    """base64 of a degenerate CMS SignedData holding ``certs`` (4.1.3, 4.2.3), in one line: RFC 4648
    section 4 base64 has no line breaks, and strongSwan's pki fails on the 76-column MIME layout."""
    return base64.b64encode(pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER))


def _printable(text: str, limit: int = 200) -> str:
    """Remote text for a log line or an error body: control characters escaped, length bounded."""
    return safe(text, limit)


def name_text(name: x509.Name) -> str:
    """A subject in its encoded order (RFC 4514 writes it backwards), serialNumber by name."""
    return _printable(",".join(rdn.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"}) for rdn in name.rdns))


def _san_of(owner: x509.Certificate | x509.CertificateSigningRequest) -> frozenset[x509.GeneralName] | None:
    try:
        return frozenset(owner.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return None


def _san_text(san: frozenset[x509.GeneralName] | None) -> str:
    if not san:
        return "none"
    return _printable(", ".join(sorted(f"{type(g).__name__}:{g.value}" for g in san)))


def check_same_identity(csr: x509.CertificateSigningRequest, current: x509.Certificate) -> None:
    """RFC 7030 4.2.2: in a re-enrollment "the Subject field and SubjectAltName extension MUST be
    identical to the corresponding fields in the certificate being renewed or rekeyed". Our CA writes
    both itself, so this is about the request: a client that asks for another identity is refused
    (400) rather than silently given its old one. Attribute order counts; SAN entry order does not."""
    if csr.subject != current.subject:
        raise EstHttpError(400, f"re-enrollment must repeat the Subject of the certificate being renewed "
                                f"(RFC 7030 4.2.2): the certificate has {name_text(current.subject)!r}, "
                                f"the request {name_text(csr.subject)!r}")
    try:
        asked = _san_of(csr)
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise EstHttpError(400, f"request extensions do not parse: {_printable(str(exc))}") from None
    have = _san_of(current)
    if asked != have:
        raise EstHttpError(400, f"re-enrollment must repeat the SubjectAltName of the certificate being renewed "
                                f"(RFC 7030 4.2.2): the certificate has {_san_text(have)}, the request "
                                f"{_san_text(asked)}")


def issue_for(ca: CertificateAuthority, decision: AuthDecision, csr: x509.CertificateSigningRequest,
              now: datetime.datetime | None = None, on_issued: OnIssued | None = None,
              operation: str = OP_SIMPLEENROLL) -> bytes:
    """Issue under ``decision`` and return the 200 reply body; CSR problems become EstHttpError.
    ``on_issued(device serial, certificate, operation)`` records it (revocation needs to know what
    exists); it may raise EstDenied to withhold the certificate, which then never leaves this process."""
    try:
        cert = ca.issue(csr, serial_expected=decision.serial, lifetime=decision.lifetime, san_ip=decision.san_ip,
                        now=now)
    except CsrRejected as exc:
        raise EstHttpError(_CSR_STATUS.get(exc.code, 400), exc.reason) from None
    if on_issued is not None:
        on_issued(decision.serial, cert, operation)
    log.info("EST issued certificate %x for serial %s until %s", cert.serial_number, _printable(decision.serial),
             cert.not_valid_after_utc.isoformat())
    return certs_only_body([cert])


# --- the usual policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What the store says about a known gateway."""

    lifetime: datetime.timedelta
    san_ip: IPAddress | None = None


OnIssued = Callable[[str, x509.Certificate, str], None]  # (device serial, certificate, operation)
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


# The Certificate handshake message (RFC 5246 7.4.2, RFC 8446 4.4.2) as OpenSSL's message callback
# shows it: decrypted (TLS 1.3 encrypts it), with its handshake header.
#
#   TLS 1.2  +------+--------+-------------+-------------+---------+-- next certificate ...
#            | 0x0b | len(3) | list_len(3) | cert_len(3) | DER ... |
#            +------+--------+-------------+-------------+---------+--
#   TLS 1.3  +------+--------+------------+-------------+-------------+-------------+---------+------------+--
#            | 0x0b | len(3) | ctx_len(1) | context ... | list_len(3) | cert_len(3) | DER ... | ext_len(2) | ...
#            +------+--------+------------+-------------+-------------+-------------+---------+------------+--
TLS_CONTENT_HANDSHAKE = 22  # ContentType handshake (RFC 8446 5.1)
TLS_HANDSHAKE_CERTIFICATE = 11  # HandshakeType certificate (RFC 8446 4)


def first_certificate(message: bytes, tls13: bool) -> bytes | None:
    """The DER of the first certificate in a Certificate handshake message; None if it holds none or
    does not parse (the TLS stack judges the message; this only names who sent it)."""
    if len(message) < 4 or message[0] != TLS_HANDSHAKE_CERTIFICATE:
        return None
    at = 4
    if tls13:
        if len(message) < at + 1:
            return None
        at += 1 + message[at]
    if len(message) < at + 6:
        return None
    size = int.from_bytes(message[at + 3:at + 6], "big")
    at += 6
    if size == 0 or len(message) < at + size:
        return None
    return bytes(message[at:at + size])


class HandshakeRefusals:
    """Client certificates the TLS layer refused: counted, per presented subject too (a bounded table),
    and logged at most once per subject per ``interval_s`` and ``max_lines`` times per interval in all
    (a stranger decides how often this happens)."""

    def __init__(self, *, interval_s: float = REFUSAL_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 max_subjects: int = MAX_REFUSED_SUBJECTS, max_lines: int = MAX_REFUSAL_LINES):
        self.interval_s, self.clock, self.max_subjects, self.max_lines = interval_s, clock, max_subjects, max_lines
        self.count = 0
        self.by_subject: dict[str, int] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # subject -> (when last logged, refusals not logged since)
        self._window: tuple[float, int] = (float("-inf"), 0)  # (start, lines logged in it)

    def _bounded(self, table: dict, key: str, value: object) -> None:
        table.pop(key, None)
        table[key] = value  # most recent last; the oldest goes first
        while len(table) > self.max_subjects:
            del table[next(iter(table))]

    def refused(self, subject: str | None, reason: str, peer: str) -> str | None:
        """Count one refusal; return the line logged for it, or None when the rate limit held it back."""
        subject = _printable(subject or "(no certificate seen)")
        self.count += 1
        self._bounded(self.by_subject, subject, self.by_subject.get(subject, 0) + 1)
        now = self.clock()
        last, held = self._logged.get(subject, (float("-inf"), 0))
        start, lines = self._window
        if now - start >= self.interval_s:
            start, lines = now, 0
        if now - last < self.interval_s or lines >= self.max_lines:
            self._bounded(self._logged, subject, (last, held + 1))
            return None
        self._window = (start, lines + 1)
        self._bounded(self._logged, subject, (now, 0))
        more = f" ({held} more since the last report)" if held else ""
        line = (f"TLS client certificate refused: {subject} from {_printable(peer)}: {_printable(reason)}{more}")
        log.warning(line)
        return line


OnHandshakeFailed = Callable[[BaseException, "str | None", str], None]  # (error, presented subject, peer)


class _AlertingTls(sslproto.SSLProtocol):
    """asyncio's server-side TLS, except after a failed handshake: asyncio drops the connection without
    sending the alert OpenSSL wrote for the peer, and tells only a debug log. This one sends the alert
    (unknown_ca, bad_certificate, ...: RFC 8446 6.2) and reports the failure. With a ``guard``, the
    connection is also held to the site's limits (controller/site_guard.py): counted by source address
    until its client certificate is known, then by that certificate; timed out while its request head is
    slow or it idles."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app_protocol: asyncio.BaseProtocol, ctx: ssl.SSLContext,
                 certificates: weakref.WeakKeyDictionary, on_failed: OnHandshakeFailed, guard: SiteGuard | None):
        super().__init__(loop, app_protocol, ctx, None, server_side=True)
        self._seen, self._on_failed = certificates, on_failed
        self._guard, self._conn = guard, None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._guard is None:
            return
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else "?"
        self._conn = self._guard.opened(address, transport.abort)  # type: ignore[attr-defined]
        if self._conn is None:
            transport.abort()  # type: ignore[attr-defined]
        else:
            self._extra[CONN_INFO] = self._conn  # the request side finds it (SiteGuard.middleware)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._conn is not None:
            self._guard.lost(self._conn)  # type: ignore[union-attr]
        super().connection_lost(exc)

    def buffer_updated(self, nbytes: int) -> None:
        if self._conn is not None:
            self._conn.received()
        super().buffer_updated(nbytes)

    def _write_appdata(self, list_of_data: list[bytes]) -> None:
        if self._conn is not None:
            self._conn.sent()
        super()._write_appdata(list_of_data)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                self._process_outgoing()  # the alert, still in OpenSSL's outgoing buffer
            subject = None
            der = self._seen.pop(self._sslobj, None) if self._sslobj is not None else None
            if der is not None:
                try:
                    subject = name_text(x509.load_der_x509_certificate(der).subject)
                except ValueError:
                    subject = "(a certificate that does not parse)"
            peer = self._get_extra_info("peername")
            self._on_failed(handshake_exc, subject, str(peer[0]) if isinstance(peer, tuple) else "?")
        elif self._sslobj is not None:
            self._seen.pop(self._sslobj, None)
        over = False
        if handshake_exc is None and self._conn is not None and self._sslobj is not None:
            info = self._sslobj.getpeercert()  # a verified client certificate, as a dict (none: {})
            over = not self._guard.authenticated(self._conn, info.get("serialNumber") if info else None)  # type: ignore[union-attr]
        super()._on_handshake_complete(handshake_exc)
        if over and self._transport is not None:
            self._transport.abort()


class TlsSite(web.TCPSite):
    """aiohttp's TCPSite with TLS, except that a failed handshake sends its alert and calls
    ``on_failed(error, subject the client presented or None, peer address)``; a client certificate we
    refused is an ssl.SSLCertVerificationError. Sets a message callback on ``ssl_context`` to see which
    certificate a client presented (OpenSSL keeps none it did not accept). With ``guard``, every
    connection is held to its limits; the application must then carry ``guard.middleware`` (it tells the
    guard when a request head is in)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ssl_context: ssl.SSLContext,
                 on_failed: OnHandshakeFailed, guard: SiteGuard | None = None):
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._on_failed = on_failed
        self._guard = guard
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # SSLObject -> client certificate DER

        def remember(conn: object, direction: str, version: object, content_type: int, msg_type: int,
                     data: bytes) -> None:
            # Called by OpenSSL for every message; it must not raise (that would fail the handshake).
            if direction == "read" and content_type == TLS_CONTENT_HANDSHAKE and msg_type == TLS_HANDSHAKE_CERTIFICATE:
                der = first_certificate(data, version == ssl.TLSVersion.TLSv1_3)
                if der is not None:
                    with contextlib.suppress(TypeError):
                        self._seen[conn] = der

        ssl_context._msg_callback = remember  # type: ignore[attr-defined]  # in Python since 3.8; no public hook

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would make asyncio's own TLS
        loop = asyncio.get_running_loop()
        server, ctx = self._runner.server, self._ssl_context
        assert server is not None and ctx is not None
        self._server = await loop.create_server(
            lambda: _AlertingTls(loop, server(), ctx, self._seen, self._on_failed, self._guard),
            self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


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
                    log.info("EST %s for %s pending; retry after %d s", operation, _printable(str(who)),
                             decision.retry_after)
                    return _text(202, "request accepted, decision pending",
                                 {"Retry-After": str(max(1, int(decision.retry_after)))})
                if not isinstance(decision, AuthDecision):
                    raise TypeError(f"authorize returned {type(decision).__name__}, not AuthDecision or Pending")
                body = await _read_limited(request, MAX_CSR_BODY)
                csr = decode_csr_body(request.headers.get("Content-Type"), body)
                if operation == OP_SIMPLEREENROLL and peer is not None:
                    check_same_identity(csr, peer)
                reply = issue_for(ca, decision, csr, on_issued=on_issued, operation=operation)
            except EstDenied as exc:
                log.warning("EST %s refused (%d) for client %s: %s", operation, exc.status, _describe(peer),
                            _printable(exc.reason, 300))
                return _text(exc.status, exc.reason)
            except EstHttpError as exc:
                log.warning("EST %s refused (%d) for client %s: %s", operation, exc.status, _describe(peer),
                            _printable(exc.reason, 300))
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
    return _printable(f"{name!s} (issuer {cert.issuer.rfc4514_string()})", 300)

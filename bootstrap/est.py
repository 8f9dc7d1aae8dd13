"""EST client (RFC 7030, as updated by RFC 8951 and RFC 8996): the gateway asks the controller's CA
for its LDevID.

    gateway                                         controller (EST server)
      | TLS; client cert = IDevID (first time) or LDevID (renewal), RFC 7030 3.3.2
      |-- GET  /.well-known/est/cacerts -------------->|  4.1.2
      |<-- 200 application/pkcs7-mime certs-only ------|  4.1.3
      |-- POST /.well-known/est/simpleenroll --------->|  4.2.1, body: base64(DER PKCS#10)
      |   (or  /.well-known/est/simplereenroll)        |  4.2.2
      |<-- 202 Retry-After: n  (not decided yet) ------|  4.2.3: resend the same request later
      |<-- 200 application/pkcs7-mime; smime-type=certs-only, base64(CMS certs-only) --|

The private key is made on the device and only its public half leaves it, inside the request. The
request's subject carries the device serial twice: as serialNumber (the IEEE 802.1AR DevID
convention, which the CA matches against the authenticated client) and as CN (for humans).

Bodies are base64 in both directions (RFC 7030 4.1.3, 4.2.1); RFC 8951 section 3 makes base64 the
only encoding whatever a Content-Transfer-Encoding header says, so we never send that header, send
base64 without line breaks (RFC 4648 section 4) and read bodies with or without them.

The functions above the "driver" line are sans-IO (bytes and objects in and out); the async
functions below them only move those bytes over aiohttp. Trust is the caller's: the ssl_context
verifies the server against the controller's trust anchor and carries the client certificate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import email.utils
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

# --- RFC 7030 constants -------------------------------------------------------------------------
WELL_KNOWN = "/.well-known/est"  # 3.2.2
OP_CACERTS = "cacerts"  # 4.1
OP_SIMPLEENROLL = "simpleenroll"  # 4.2.1
OP_SIMPLEREENROLL = "simplereenroll"  # 4.2.2
CT_PKCS10 = "application/pkcs10"  # 4.2.1
CT_PKCS7 = "application/pkcs7-mime"  # 4.1.3, 4.2.3 (smime-type=certs-only)
MAX_SERIAL_LEN = 64  # X.520 ub-serial-number

# --- tuning ---------------------------------------------------------------------------------------
MAX_PENDING = 5  # 202 answers we accept before giving up (the caller retries the whole step later)
DEFAULT_RETRY_AFTER = 60.0  # seconds, if a 202 comes without a usable Retry-After
MAX_RETRY_AFTER = 3600.0  # cap a single wait, whatever the server asks
MAX_RESPONSE = 256 * 1024  # bytes; a certs-only reply is a few KiB
TIMEOUT = 30.0  # seconds per HTTP exchange

_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class EstError(Exception):
    """Enrollment failed. ``fault`` is "local" when this side must change (our inputs, or the server
    refused our request with a 4xx), "remote" when the server must (5xx, an untrusted or broken
    server, a reply that does not fit our request, or no answer at all). ``status`` is the HTTP
    status when there was one."""

    def __init__(self, reason: str, *, fault: str, status: int | None = None):
        if fault not in ("local", "remote"):
            raise ValueError(f"fault must be local or remote, not {fault!r}")
        super().__init__(reason)
        self.reason = reason
        self.fault = fault
        self.status = status

    def __str__(self) -> str:
        code = f" (HTTP {self.status})" if self.status is not None else ""
        return f"EST {self.fault} error{code}: {self.reason}"


# --- sans-IO: requests ------------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh device key (ECDSA P-256, what the controller's CA and IKE expect)."""
    return ec.generate_private_key(ec.SECP256R1())


def device_subject(serial: str) -> x509.Name:
    """serialNumber=<serial>, CN=<serial>. serialNumber is a PrintableString (X.520) when the serial
    fits that alphabet, else a UTF8String so that any printable serial still round-trips."""
    if not serial or len(serial) > MAX_SERIAL_LEN or not serial.isprintable():
        raise EstError(f"device serial {serial!r} must be 1-{MAX_SERIAL_LEN} printable characters", fault="local")
    kind = _ASN1Type.PrintableString if set(serial) <= _PRINTABLE else _ASN1Type.UTF8String
    return x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial, _type=kind),
                      x509.NameAttribute(NameOID.COMMON_NAME, serial)])


def subject_serial(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(attrs) != 1 or not isinstance(attrs[0].value, str):
        return None
    return attrs[0].value


def _signature_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None  # EdDSA hashes internally
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return hashes.SHA256()
    raise EstError(f"unsupported key type {type(key).__name__}", fault="local")


def build_csr(key: PrivateKey, subject: x509.Name,
              san: x509.SubjectAlternativeName | None = None) -> x509.CertificateSigningRequest:
    """A PKCS#10 request (RFC 2986) for ``key``'s public half, signed with ``key`` (proof of possession)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, _signature_hash(key))


def encode_csr(csr: x509.CertificateSigningRequest) -> bytes:
    """The request body of 4.2.1: base64 of the DER request, in one line (RFC 4648 section 4)."""
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER))


def basic_authorization(user: str, password: str) -> str:
    """An Authorization header value for HTTP Basic (RFC 7617 section 2), UTF-8 as in its section 2.1."""
    if ":" in user:
        raise EstError("an HTTP Basic user name cannot contain ':' (RFC 7617 section 2)", fault="local")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def enroll_headers() -> dict[str, str]:
    return {"Content-Type": CT_PKCS10, "Accept": CT_PKCS7}


# --- sans-IO: responses -----------------------------------------------------------------------------


def decode_base64(body: bytes, what: str) -> bytes:
    """Strict base64 with any whitespace (line breaks or none) removed; RFC 8951 section 3."""
    compact = b"".join(body.split())
    if not compact:
        raise EstError(f"{what} is empty", fault="remote")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise EstError(f"{what} is not base64", fault="remote") from None


def decode_certs_only(body: bytes, what: str = "certs-only reply") -> list[x509.Certificate]:
    """Certificates from a base64 degenerate CMS SignedData (RFC 5652 5.1, RFC 7030 4.1.3 / 4.2.3)."""
    der = decode_base64(body, what)
    try:
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise EstError(f"{what} is not a CMS certs-only message: {exc}", fault="remote") from None
    if not certs:
        raise EstError(f"{what} holds no certificates", fault="remote")
    return certs


def _media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    main, *params = content_type.split(";")
    parsed = {}
    for p in params:
        k, _, v = p.partition("=")
        parsed[k.strip().lower()] = v.strip().strip('"').lower()
    return main.strip().lower(), parsed


def check_pkcs7_type(content_type: str | None, what: str) -> None:
    main, params = _media_type(content_type)
    if main != CT_PKCS7:
        raise EstError(f"{what} has Content-Type {content_type!r}, expected {CT_PKCS7}", fault="remote")
    # smime-type is optional for cacerts in practice; if present it must say certs-only.
    if params.get("smime-type", "certs-only") != "certs-only":
        raise EstError(f"{what} has smime-type {params['smime-type']!r}, expected certs-only", fault="remote")


def parse_retry_after(value: str | None, now: datetime.datetime) -> float:
    """Seconds to wait for a Retry-After value: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 1.0), MAX_RETRY_AFTER)


def _error_text(body: bytes) -> str:
    """A short, printable excerpt of a server's plain-text error body (RFC 7030 4.2.3)."""
    text = body[:200].decode("utf-8", errors="replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return f": {text}" if text else ""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate


@dataclass(frozen=True)
class RetryLater:
    seconds: float


def interpret_enroll_response(status: int, headers: dict[str, str], body: bytes, *, now: datetime.datetime,
                              key: PrivateKey, serial: str,
                              issuers: Sequence[x509.Certificate] = ()) -> Issued | RetryLater:
    """What an enroll reply means (RFC 7030 4.2.3). ``headers`` keys are lower-case."""
    if status == 202:
        return RetryLater(parse_retry_after(headers.get("retry-after"), now))
    if 400 <= status < 500:
        raise EstError(f"server refused the request{_error_text(body)}", fault="local", status=status)
    if status != 200:
        raise EstError(f"server answered {status}{_error_text(body)}", fault="remote", status=status)
    check_pkcs7_type(headers.get("content-type"), "enroll reply")
    certs = decode_certs_only(body, "enroll reply")
    return Issued(pick_issued(certs, key=key, serial=serial, issuers=issuers, now=now))


def pick_issued(certs: Sequence[x509.Certificate], *, key: PrivateKey, serial: str,
                issuers: Sequence[x509.Certificate] = (), now: datetime.datetime | None = None) -> x509.Certificate:
    """The certificate in a reply that is ours: our public key, our serial, currently valid and, if
    ``issuers`` are given, signed by one of them. Anything else is the server's fault."""
    ours = key.public_key()
    mine = [c for c in certs if c.public_key() == ours]
    if not mine:
        raise EstError("reply holds no certificate for our public key", fault="remote")
    cert = mine[0]
    got = subject_serial(cert.subject)
    if got != serial:
        raise EstError(f"issued certificate names serial {got!r}, we are {serial!r}", fault="remote")
    now = now or datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise EstError(f"issued certificate is not valid now (valid {cert.not_valid_before_utc} .. "
                       f"{cert.not_valid_after_utc})", fault="remote")
    if issuers and not any(_signed_by(cert, ca) for ca in issuers):
        raise EstError(f"issued certificate (issuer {cert.issuer.rfc4514_string()}) is not signed by a "
                       "trusted CA", fault="remote")
    return cert


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def renew_at(cert: x509.Certificate) -> datetime.datetime:
    """When to reenroll: two thirds into the certificate's lifetime (UTC)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * 2 / 3


# --- driver: aiohttp ------------------------------------------------------------------------------


def _url(base_url: str, op: str) -> str:
    """``base_url`` is the server origin ("https://host:port"), optionally with the well-known prefix
    or an arbitrary label (3.2.2: /.well-known/est/<label>/<op>) already appended."""
    base = base_url.rstrip("/")
    if WELL_KNOWN not in base:
        base += WELL_KNOWN
    return f"{base}/{op}"


# TLS alerts a server sends when it refuses our client certificate (RFC 8446 6.2), as OpenSSL names them.
_CLIENT_CERT_ALERTS = {"TLSV1_ALERT_UNKNOWN_CA": "its issuer is not a CA the server trusts (unknown_ca)",
                       "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
                       "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it expired, or the clocks disagree (certificate_expired)",
                       "SSLV3_ALERT_CERTIFICATE_REVOKED": "it was revoked (certificate_revoked)",
                       "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
                       "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
                       "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires one (certificate_required)"}


def _refused_certificate(exc: BaseException) -> str | None:
    """What the server's alert says of our client certificate, if the failure was such an alert."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{getattr(exc, 'reason', '')} {exc}"
        for alert, meaning in _CLIENT_CERT_ALERTS.items():
            if alert in text:
                return meaning
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def _connection_error(exc: BaseException, url: str) -> EstError:
    refused = _refused_certificate(exc)
    if refused is not None:
        # The server told us, with a TLS alert, that it does not take our credential.
        return EstError(f"{url}: the server refused our client certificate: {refused}", fault="local")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # We did not send a single byte of HTTP: the server failed to prove who it is.
        return EstError(f"{url}: server certificate not trusted: {exc.certificate_error}", fault="remote")
    if isinstance(exc, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError):
        # With TLS 1.3 a server that rejects our client certificate can only drop the connection
        # after our side already considers the handshake done.
        return EstError(f"{url}: connection dropped ({exc}); if this persists, the server may not accept "
                        "our client certificate", fault="remote")
    if isinstance(exc, TimeoutError):
        return EstError(f"{url}: no answer within {TIMEOUT:.0f} s", fault="remote")
    return EstError(f"{url}: {type(exc).__name__}: {exc}", fault="remote")


async def _exchange(session: aiohttp.ClientSession, method: str, url: str, *, ssl_context: ssl.SSLContext,
                    data: bytes | None = None, headers: dict[str, str] | None = None,
                    basic: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if basic is not None:
        headers["Authorization"] = basic_authorization(*basic)
    try:
        async with session.request(method, url, data=data, headers=headers, ssl=ssl_context,
                                   allow_redirects=False) as resp:
            body = await resp.content.read(MAX_RESPONSE + 1)
            if len(body) > MAX_RESPONSE:
                raise EstError(f"{url}: reply larger than {MAX_RESPONSE} bytes", fault="remote", status=resp.status)
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        raise _connection_error(exc, url) from exc


def _check_context(ssl_context: ssl.SSLContext) -> None:
    # Defence in depth: this module never talks to an unauthenticated server (RFC 7030 3.3.1, 3.6).
    if not isinstance(ssl_context, ssl.SSLContext) or ssl_context.verify_mode != ssl.CERT_REQUIRED:
        raise EstError("ssl_context must verify the server certificate (CERT_REQUIRED)", fault="local")


def _session(timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


async def cacerts(base_url: str, ssl_context: ssl.SSLContext, *, timeout: float = TIMEOUT) -> list[x509.Certificate]:
    """The CA certificates the server distributes (RFC 7030 4.1). The TLS server certificate is
    verified by ``ssl_context`` first; this is not the unauthenticated bootstrap of 4.1.1."""
    _check_context(ssl_context)
    url = _url(base_url, OP_CACERTS)
    async with _session(timeout) as session:
        status, headers, body = await _exchange(session, "GET", url, ssl_context=ssl_context,
                                                headers={"Accept": CT_PKCS7})
    if status != 200:
        fault = "local" if 400 <= status < 500 else "remote"
        raise EstError(f"{url}: cacerts answered {status}{_error_text(body)}", fault=fault, status=status)
    check_pkcs7_type(headers.get("content-type"), "cacerts reply")
    return decode_certs_only(body, "cacerts reply")


Sleep = Callable[[float], Awaitable[object]]


async def _enroll(op: str, base_url: str, key: PrivateKey, csr: x509.CertificateSigningRequest, serial: str, *,
                  ssl_context: ssl.SSLContext, basic: tuple[str, str] | None, issuers: Sequence[x509.Certificate],
                  max_pending: int, timeout: float, sleep: Sleep) -> x509.Certificate:
    _check_context(ssl_context)
    url = _url(base_url, op)
    body = encode_csr(csr)  # one request, resent unchanged after a 202 (4.2.3)
    async with _session(timeout) as session:
        for attempt in range(max_pending + 1):
            status, headers, reply = await _exchange(session, "POST", url, ssl_context=ssl_context, data=body,
                                                     headers=enroll_headers(), basic=basic)
            now = datetime.datetime.now(datetime.UTC)
            try:
                outcome = interpret_enroll_response(status, headers, reply, now=now, key=key, serial=serial,
                                                    issuers=issuers)
            except EstError as exc:
                raise EstError(f"{url}: {exc.reason}", fault=exc.fault, status=exc.status) from None
            if isinstance(outcome, Issued):
                return outcome.cert
            if attempt < max_pending:
                await sleep(outcome.seconds)
    raise EstError(f"{url}: still pending after {max_pending} Retry-After waits", fault="remote", status=202)


async def simple_enroll(base_url: str, key: PrivateKey, subject_serial: str, *, ssl_context: ssl.SSLContext,
                        basic: tuple[str, str] | None = None, issuers: Sequence[x509.Certificate] = (),
                        max_pending: int = MAX_PENDING, timeout: float = TIMEOUT,
                        sleep: Sleep = asyncio.sleep) -> x509.Certificate:
    """First enrollment (RFC 7030 4.2.1): returns the LDevID for ``key``.

    ``ssl_context`` verifies the server and presents the IDevID as client certificate (3.3.2);
    ``basic`` adds HTTP Basic credentials (3.2.3) for servers that want them as well. If ``issuers``
    is given, the issued certificate must be signed by one of them. ``sleep`` is injectable so
    tests need not wait out a Retry-After.
    """
    csr = build_csr(key, device_subject(subject_serial))
    return await _enroll(OP_SIMPLEENROLL, base_url, key, csr, subject_serial, ssl_context=ssl_context, basic=basic,
                         issuers=issuers, max_pending=max_pending, timeout=timeout, sleep=sleep)


async def simple_reenroll(base_url: str, key: PrivateKey, current: x509.Certificate, *,
                          ssl_context: ssl.SSLContext, basic: tuple[str, str] | None = None,
                          issuers: Sequence[x509.Certificate] = (), max_pending: int = MAX_PENDING,
                          timeout: float = TIMEOUT, sleep: Sleep = asyncio.sleep) -> x509.Certificate:
    """Renewal (same ``key``) or rekey (a new one) of the ``current`` LDevID (RFC 7030 4.2.2).

    The request repeats the current certificate's subject and subjectAltName, as 4.2.2 requires;
    ``ssl_context`` must present the current LDevID as client certificate.
    """
    serial = subject_serial(current.subject)
    if serial is None:
        raise EstError("current certificate has no single serialNumber in its subject", fault="local")
    try:
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    csr = build_csr(key, current.subject, san)
    return await _enroll(OP_SIMPLEREENROLL, base_url, key, csr, serial, ssl_context=ssl_context, basic=basic,
                         issuers=issuers, max_pending=max_pending, timeout=timeout, sleep=sleep)

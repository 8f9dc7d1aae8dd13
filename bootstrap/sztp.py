"""RFC 8572 SZTP client: the RESTCONF calls `get-bootstrapping-data` and `report-progress`.

The bodies follow the YANG module ietf-sztp-bootstrap-server (RFC 8572 section 7.3) in JSON
(`application/yang-data+json`, RFC 8040 and RFC 7951), so this client works against any RFC 8572
server. The device authenticates with its IDevID as a TLS client certificate.

Toward a server it cannot authenticate (RFC 8572 section 5.3: none of its trust anchors verifies the
server's certificate), the device connects provisionally, asks for signed data (`signed-data-preferred`)
and believes only what is signed through the ownership voucher to its manufacturer, or unsigned
redirect information with its trust anchors discarded (section 2.1); it sends no progress reports
there. That is the one place nsg talks TLS without authenticating the server.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import ssl
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from bootstrap.errors import LocalBootstrapError, Reason, RemoteBootstrapError

MEDIA = "application/yang-data+json"
MODULE = "ietf-sztp-bootstrap-server"
GET_PATH = f"/restconf/operations/{MODULE}:get-bootstrapping-data"
REPORT_PATH = f"/restconf/operations/{MODULE}:report-progress"

# --- RFC constants: the module ietf-sztp-bootstrap-server (RFC 8572 section 7.3) -----------------------

# rpc report-progress, input leaf progress-type: the whole enumeration (what a server must accept)
PROGRESS_TYPES = (
    "bootstrap-initiated", "parsing-initiated", "parsing-warning", "parsing-error", "parsing-complete",
    "boot-image-initiated", "boot-image-warning", "boot-image-error", "boot-image-mismatch",
    "boot-image-installed-rebooting", "boot-image-complete",
    "pre-script-initiated", "pre-script-warning", "pre-script-error", "pre-script-complete",
    "config-initiated", "config-warning", "config-error", "config-complete",
    "post-script-initiated", "post-script-warning", "post-script-error", "post-script-complete",
    "bootstrap-warning", "bootstrap-error", "bootstrap-complete", "informational")
# nodes of report-progress input; the two containers only "when progress-type = 'bootstrap-complete'"
REPORT_INPUT_NODES = ("progress-type", "message", "ssh-host-keys", "trust-anchor-certs")
REPORT_COMPLETE_ONLY = ("ssh-host-keys", "trust-anchor-certs")
# rpc get-bootstrapping-data: input leaves, output leaves, the reporting-level enumeration and default
GET_INPUT_LEAVES = ("signed-data-preferred", "hw-model", "os-name", "os-version", "nonce")
GET_OUTPUT_LEAVES = ("reporting-level", "conveyed-information", "owner-certificate", "ownership-voucher")
MINIMAL, VERBOSE = "minimal", "verbose"
REPORTING_LEVELS = (MINIMAL, VERBOSE)
REPORTING_LEVEL_DEFAULT = MINIMAL
NONCE_OCTETS = (16, 32)  # input leaf nonce: binary { length "16..32" }

# --- tuning ------------------------------------------------------------------------------------------

MAX_RESPONSE = 4 << 20
MAX_MESSAGE = 1000  # characters of a progress report's message we send


class Progress(StrEnum):
    """The progress types this device sends: a subset of the progress-type enumeration above.
    ``report_progress`` refuses anything else, so this is all the client can ever send."""

    BOOTSTRAP_INITIATED = "bootstrap-initiated"
    PARSING_INITIATED = "parsing-initiated"
    PARSING_ERROR = "parsing-error"
    PARSING_COMPLETE = "parsing-complete"
    CONFIG_INITIATED = "config-initiated"
    CONFIG_ERROR = "config-error"
    CONFIG_COMPLETE = "config-complete"
    BOOTSTRAP_ERROR = "bootstrap-error"
    BOOTSTRAP_COMPLETE = "bootstrap-complete"
    INFORMATIONAL = "informational"


PROGRESS = tuple(p.value for p in Progress)  # what report_progress lets through


@dataclass(frozen=True)
class Output:
    """get-bootstrapping-data output (RFC 8572 section 7.3)."""

    conveyed_information: bytes
    owner_certificate: bytes | None = None
    ownership_voucher: bytes | None = None
    reporting_level: str = REPORTING_LEVEL_DEFAULT

    @property
    def signed(self) -> bool:
        return self.owner_certificate is not None and self.ownership_voucher is not None


def request_body(*, nonce: bytes | None, signed_data_preferred: bool, hw_model: str, os_name: str,
                 os_version: str) -> bytes:
    inp: dict[str, object] = {"hw-model": hw_model, "os-name": os_name, "os-version": os_version}
    if signed_data_preferred:
        inp["signed-data-preferred"] = [None]  # a YANG "empty" leaf in JSON (RFC 7951 6.9)
    if nonce is not None:
        low, high = NONCE_OCTETS
        if not low <= len(nonce) <= high:
            raise LocalBootstrapError(f"nonce of {len(nonce)} octets; RFC 8572 section 7.3 wants {low}..{high}")
        inp["nonce"] = base64.b64encode(nonce).decode()
    return json.dumps({f"{MODULE}:input": inp}).encode()


def report_body(progress_type: str, message: str = "") -> bytes:
    """report-progress input. Only our own progress types pass: sending another would be our bug,
    and a conforming server answers it with an error (RFC 8572 section 7.3)."""
    try:
        kind = Progress(progress_type)
    except ValueError:
        raise LocalBootstrapError(f"progress type {progress_type!r} is not one this client sends: it sends "
                                  f"{', '.join(PROGRESS)}, all from RFC 8572 section 7.3") from None
    inp = {"progress-type": kind.value}
    if message:
        inp["message"] = message[:MAX_MESSAGE]
    return json.dumps({f"{MODULE}:input": inp}).encode()


def _fail(why: str, field: str | None = None) -> RemoteBootstrapError:
    return RemoteBootstrapError(f"get-bootstrapping-data: {why}", reason=Reason.MALFORMED_RESPONSE, field=field)


def parse_output(body: bytes) -> Output:
    """Strictly decode the RPC output; anything unexpected is the server's fault."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"response is not JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {f"{MODULE}:output"}:
        raise _fail(f"response must hold exactly '{MODULE}:output'")
    out = doc[f"{MODULE}:output"]
    if not isinstance(out, dict):
        raise _fail("output is not an object")
    extra = set(out) - set(GET_OUTPUT_LEAVES)
    if extra:
        raise _fail(f"unknown members {sorted(extra)}", field=sorted(extra)[0])

    def b64(name: str) -> bytes | None:
        v = out.get(name)
        if v is None:
            return None
        if not isinstance(v, str):
            raise _fail(f"{name} is not a base64 string", field=name)
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(f"{name} is not valid base64", field=name) from None

    conveyed = b64("conveyed-information")
    if conveyed is None:
        raise _fail("no conveyed-information", field="conveyed-information")
    owner, voucher = b64("owner-certificate"), b64("ownership-voucher")
    if (owner is None) != (voucher is None):
        raise _fail("owner-certificate and ownership-voucher come together or not at all (RFC 8572 7.3 'must')")
    level = out.get("reporting-level", REPORTING_LEVEL_DEFAULT)
    if not isinstance(level, str) or level not in REPORTING_LEVELS:
        raise _fail(f"reporting-level {level!r} is not one of {', '.join(REPORTING_LEVELS)}", field="reporting-level")
    return Output(conveyed, owner, voucher, level)


def untrusted_tls_context(client_cert: str, client_key: str) -> ssl.SSLContext:
    """For a bootstrap server we cannot authenticate (RFC 8572 5.3, a provisional connection): present
    our IDevID, do not authenticate the server, and believe only signed data from it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing it says is believed unless signed through the voucher
    ctx.load_cert_chain(client_cert, client_key)
    return ctx


def trusted_tls_context(anchors: tuple[x509.Certificate, ...], client_cert: str, client_key: str) -> ssl.SSLContext:
    """For a bootstrap server to authenticate with ``anchors`` (RFC 8572 5.3): a trusted bootstrap
    server once the handshake succeeds."""
    if not anchors:
        raise LocalBootstrapError("a trusted bootstrap server needs at least one trust anchor")
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in anchors)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(client_cert, client_key)
    return ctx


_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}  # RFC 4514 has no short name for it; 2.5.4.5 tells nobody


def describe_certificate(cert: x509.Certificate) -> str:
    return (f"subject {cert.subject.rfc4514_string(_NAMES)}, serial number {cert.serial_number:x}, "
            f"issuer {cert.issuer.rfc4514_string(_NAMES)}")


# TLS alerts (OpenSSL reason names) a server sends when it will not take our client certificate
_REFUSAL_ALERTS = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED",
                   "ALERT_CERTIFICATE_UNKNOWN", "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_CERTIFICATE_EXPIRED",
                   "ALERT_CERTIFICATE_REVOKED", "ALERT_ACCESS_DENIED")


def _dropped_us(exc: BaseException) -> str | None:
    """How the server dropped the connection, if it looks like a refusal of our client certificate:
    a TLS alert naming it, or -- what a TLS 1.3 server that checks the certificate after the
    handshake usually leaves -- a reset or a close before any answer."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in seen:
        reason = getattr(e, "reason", None)
        if isinstance(e, ssl.SSLError) and isinstance(reason, str) and any(a in reason for a in _REFUSAL_ALERTS):
            return f"TLS alert {reason.lower().replace('_', ' ')}"
    for e in seen:
        if isinstance(e, ConnectionResetError) or (isinstance(e, OSError) and e.errno == errno.ECONNRESET):
            return "connection reset by peer"
        if isinstance(e, aiohttp.ServerDisconnectedError):
            return "connection closed before any answer"
    return None


def _transport_error(url: str, exc: BaseException, client_certificate: x509.Certificate | None
                     ) -> RemoteBootstrapError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return RemoteBootstrapError(f"{url}: the server's TLS certificate does not verify with the trust anchors "
                                    f"we hold for it ({exc.certificate_error})", reason=Reason.SERVER_NOT_AUTHENTICATED)
    how = _dropped_us(exc)
    if how is not None and client_certificate is not None:
        return RemoteBootstrapError(
            f"{url}: the server dropped the TLS connection ({how}): it probably refused our client certificate "
            f"({describe_certificate(client_certificate)}) -- is this device's manufacturer CA among the "
            f"server's trusted ones?", reason=Reason.CLIENT_CERTIFICATE_REFUSED)
    return RemoteBootstrapError(f"{url}: {type(exc).__name__}: {exc}", reason=Reason.TRANSPORT)


async def _post(url: str, body: bytes, ssl_context: ssl.SSLContext, timeout: float, *,
                client_certificate: x509.Certificate | None = None) -> bytes:
    headers = {"Content-Type": MEDIA, "Accept": MEDIA}
    t = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=t) as s, s.post(url, data=body, headers=headers,
                                                                  ssl=ssl_context) as r:
            data = await r.content.read(MAX_RESPONSE + 1)
            if len(data) > MAX_RESPONSE:
                raise _fail(f"response larger than {MAX_RESPONSE} octets")
            if r.status not in (200, 204):
                raise RemoteBootstrapError(f"{url}: HTTP {r.status}: {data[:200]!r}", reason=Reason.TRANSPORT)
            if r.status == 200 and r.content_type != MEDIA:
                raise _fail(f"content type {r.content_type!r}, expected {MEDIA}")
            return data
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _transport_error(url, exc, client_certificate) from None


async def get_bootstrapping_data(base_url: str, ssl_context: ssl.SSLContext, *, nonce: bytes | None,
                                 signed_data_preferred: bool, hw_model: str, os_name: str, os_version: str,
                                 client_certificate: x509.Certificate | None = None,
                                 timeout: float = 30.0) -> Output:
    """``client_certificate`` is the one ``ssl_context`` presents, named if the server refuses it."""
    body = request_body(nonce=nonce, signed_data_preferred=signed_data_preferred, hw_model=hw_model,
                        os_name=os_name, os_version=os_version)
    return parse_output(await _post(base_url.rstrip("/") + GET_PATH, body, ssl_context, timeout,
                                    client_certificate=client_certificate))


async def report_progress(base_url: str, ssl_context: ssl.SSLContext, progress_type: str, message: str = "",
                          timeout: float = 30.0, *, client_certificate: x509.Certificate | None = None) -> None:
    """Only to trusted servers (RFC 8572 5.3): the caller passes a context that verifies the server."""
    body = report_body(progress_type, message)
    if ssl_context.verify_mode != ssl.CERT_REQUIRED:
        raise LocalBootstrapError("progress reports go only to servers we authenticated (RFC 8572 section 5.3)")
    await _post(base_url.rstrip("/") + REPORT_PATH, body, ssl_context, timeout, client_certificate=client_certificate)

"""RFC 8572 SZTP client: the RESTCONF calls `get-bootstrapping-data` and `report-progress`.

The bodies follow the YANG module ietf-sztp-bootstrap-server (RFC 8572 section 7.2) in JSON
(`application/yang-data+json`, RFC 8040), so this client works against any RFC 8572 server.
The device authenticates with its IDevID as a TLS client certificate.

Toward a server it does not trust yet (no trust anchor from a redirect), the device cannot check
the server's TLS certificate: RFC 8572 section 5.1 lets it connect anyway, ask for signed data
(`signed-data-preferred`), and accept only conveyed information whose signature chains through the
ownership voucher to its manufacturer; it sends no progress reports there. That is the one place
nsg talks TLS without authenticating the server, and it trusts nothing that comes back unsigned.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from dataclasses import dataclass

import aiohttp

from bootstrap.errors import Reason, RemoteBootstrapError

MEDIA = "application/yang-data+json"
MODULE = "ietf-sztp-bootstrap-server"
GET_PATH = f"/restconf/operations/{MODULE}:get-bootstrapping-data"
REPORT_PATH = f"/restconf/operations/{MODULE}:report-progress"
MAX_RESPONSE = 4 << 20
# RFC 8572 section 7.3 progress-type identities we send
PROGRESS = ("bootstrap-initiated", "parsing-initiated", "parsing-error", "parsing-complete",
            "onboarding-initiated", "config-initiated", "config-error", "config-complete",
            "bootstrap-error", "bootstrap-complete", "informational")


@dataclass(frozen=True)
class Output:
    """get-bootstrapping-data output (RFC 8572 section 7.2)."""

    conveyed_information: bytes
    owner_certificate: bytes | None = None
    ownership_voucher: bytes | None = None
    reporting_level: str = "minimal"

    @property
    def signed(self) -> bool:
        return self.owner_certificate is not None and self.ownership_voucher is not None


def request_body(*, nonce: bytes | None, signed_data_preferred: bool, hw_model: str, os_name: str,
                 os_version: str) -> bytes:
    inp: dict[str, object] = {"hw-model": hw_model, "os-name": os_name, "os-version": os_version}
    if signed_data_preferred:
        inp["signed-data-preferred"] = [None]  # a YANG "empty" leaf in JSON (RFC 7951 6.9)
    if nonce is not None:
        inp["nonce"] = base64.b64encode(nonce).decode()
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
    allowed = {"reporting-level", "conveyed-information", "owner-certificate", "ownership-voucher"}
    extra = set(out) - allowed
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
        raise _fail("owner-certificate and ownership-voucher come together or not at all (RFC 8572 5.4)")
    level = out.get("reporting-level", "minimal")
    if level not in ("minimal", "verbose"):
        raise _fail(f"reporting-level {level!r}", field="reporting-level")
    return Output(conveyed, owner, voucher, level)


def untrusted_tls_context(client_cert: str, client_key: str) -> ssl.SSLContext:
    """For a bootstrap server we have no trust anchor for (RFC 8572 5.1): present our IDevID, do not
    authenticate the server, and accept only signed data from it (see the module docstring)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing it says is believed unless signed through the voucher
    ctx.load_cert_chain(client_cert, client_key)
    return ctx


async def _post(url: str, body: bytes, ssl_context: ssl.SSLContext, timeout: float) -> bytes:
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
        raise RemoteBootstrapError(f"{url}: {type(exc).__name__}: {exc}", reason=Reason.TRANSPORT) from None


async def get_bootstrapping_data(base_url: str, ssl_context: ssl.SSLContext, *, nonce: bytes | None,
                                 signed_data_preferred: bool, hw_model: str, os_name: str, os_version: str,
                                 timeout: float = 30.0) -> Output:
    body = request_body(nonce=nonce, signed_data_preferred=signed_data_preferred, hw_model=hw_model,
                        os_name=os_name, os_version=os_version)
    return parse_output(await _post(base_url.rstrip("/") + GET_PATH, body, ssl_context, timeout))


async def report_progress(base_url: str, ssl_context: ssl.SSLContext, progress_type: str, message: str = "",
                          timeout: float = 30.0) -> None:
    """Only to trusted servers (RFC 8572 5.3): the caller passes a context that verifies the server."""
    if progress_type not in PROGRESS:
        raise ValueError(f"unknown progress type {progress_type!r}")
    if ssl_context.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("progress reports go only to servers we authenticated")
    inp = {"progress-type": progress_type}
    if message:
        inp["message"] = message[:1000]
    await _post(base_url.rstrip("/") + REPORT_PATH, json.dumps({f"{MODULE}:input": inp}).encode(), ssl_context,
                timeout)

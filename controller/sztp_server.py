"""The controller as an RFC 8572 bootstrap server (RESTCONF, application/yang-data+json).

A device authenticates with its IDevID (TLS client certificate from a manufacturer CA we trust).
For a known serial it gets onboarding information signed by the owner, the owner certificate,
and an ownership voucher pinning the owner's CA (issued here with the lab manufacturer's key; in
production the manufacturer's MASA issues vouchers). The onboarding "configuration" is nsg's
onboarding document: where the controller's EST and channel are, and the CA to trust for them.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from bootstrap import sztp_data
from bootstrap.cms import SigningKey
from bootstrap.sztp import GET_PATH, MEDIA, MODULE, PROGRESS, REPORT_PATH

log = logging.getLogger("controller.sztp")

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Owner:
    key: SigningKey
    cert: x509.Certificate
    ca: x509.Certificate  # the pinned-domain-cert vouchers name


@dataclass(frozen=True)
class Manufacturer:
    """Lab stand-in for a manufacturer's voucher service (MASA)."""

    key: SigningKey
    cert: x509.Certificate


@dataclass
class SztpServer:
    owner: Owner
    manufacturer: Manufacturer
    onboarding: Callable[[str], dict | None]  # serial -> nsg onboarding document, None if unknown
    trusted_manufacturers: tuple[x509.Certificate, ...]
    # Where a device that does not trust us yet is sent, with the trust anchor to trust it by:
    # (address, port, certs-only CMS of the CA). None: onboard it directly with signed data.
    redirect: tuple[str, int, bytes] | None = None
    progress: dict[str, list[dict]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"served": 0, "refused": 0, "bad_requests": 0,
                                                               "reports": 0})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(GET_PATH, self.get_bootstrapping_data)
        app.router.add_post(REPORT_PATH, self.report_progress)

    # --- helpers ---------------------------------------------------------------------------

    def _device(self, request: web.Request) -> str:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise self._error(401, "access-denied", "a device certificate (IDevID) is required")
        cert = x509.load_der_x509_certificate(der)
        for maker in self.trusted_manufacturers:
            try:
                cert.verify_directly_issued_by(maker)
            except (ValueError, TypeError, InvalidSignature):
                continue
            serials = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
            if serials:
                return str(serials[0].value)
        raise self._error(403, "access-denied", "not an IDevID of a manufacturer we know")

    def _error(self, status: int, tag: str, message: str) -> web.HTTPException:
        """RESTCONF errors (RFC 8040 7.1) in JSON."""
        body = {"ietf-restconf:errors": {"error": [{"error-type": "application", "error-tag": tag,
                                                    "error-message": message}]}}
        cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
               404: web.HTTPNotFound, 415: web.HTTPUnsupportedMediaType}[status]
        return cls(text=json.dumps(body), content_type=MEDIA)

    async def _input(self, request: web.Request) -> dict:
        if request.content_type != MEDIA:
            raise self._error(415, "invalid-value", f"send {MEDIA}")
        raw = await request.content.read(MAX_BODY + 1)
        try:
            doc = json.loads(raw) if len(raw) <= MAX_BODY else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        inp = doc.get(f"{MODULE}:input") if isinstance(doc, dict) else None
        if not isinstance(inp, dict):
            self.counters["bad_requests"] += 1
            raise self._error(400, "malformed-message", f"body must be {{'{MODULE}:input': {{...}}}}")
        return inp

    # --- RPCs -------------------------------------------------------------------------------

    async def get_bootstrapping_data(self, request: web.Request) -> web.Response:
        serial = self._device(request)
        inp = await self._input(request)
        nonce = None
        if "nonce" in inp:
            try:
                nonce = base64.b64decode(inp["nonce"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                self.counters["bad_requests"] += 1
                raise self._error(400, "invalid-value", "nonce is not base64") from None
            if not 16 <= len(nonce) <= 32:  # ietf-sztp-bootstrap-server: nonce is 16..32 octets
                raise self._error(400, "invalid-value", "nonce must be 16-32 octets")
        doc = self.onboarding(serial)
        if doc is None:
            self.counters["refused"] += 1
            raise self._error(404, "data-missing", f"no bootstrapping data for serial {serial}")
        info: sztp_data.ConveyedInfo
        if self.redirect is not None and "signed-data-preferred" in inp:
            # The device cannot authenticate us: hand it, signed, the way to a server it can (RFC 8572
            # 5.2), so that what follows -- onboarding and progress reports -- runs over trusted TLS.
            address, port, anchor = self.redirect
            info = sztp_data.RedirectInfo((sztp_data.BootstrapServer(address, port, anchor),))
        else:
            info = sztp_data.OnboardingInfo(configuration_handling="replace",
                                            configuration=json.dumps(doc, sort_keys=True).encode())
        now = datetime.datetime.now(datetime.UTC)
        voucher = sztp_data.make_voucher(
            serial, self.owner.ca, self.manufacturer.key, self.manufacturer.cert, nonce=nonce,
            expires=None if nonce else now + datetime.timedelta(days=1), created=now - datetime.timedelta(minutes=1))
        out = {
            "reporting-level": "verbose",
            "conveyed-information": base64.b64encode(
                sztp_data.sign_conveyed(info, self.owner.key, self.owner.cert)).decode(),
            "owner-certificate": base64.b64encode(sztp_data.owner_certificate_bundle(self.owner.cert)).decode(),
            "ownership-voucher": base64.b64encode(voucher).decode(),
        }
        self.counters["served"] += 1
        log.info("bootstrapping data served", extra={"fields": {"serial": serial, "nonce": nonce is not None}})
        return web.Response(text=json.dumps({f"{MODULE}:output": out}), content_type=MEDIA)

    async def report_progress(self, request: web.Request) -> web.Response:
        serial = self._device(request)
        inp = await self._input(request)
        kind = inp.get("progress-type")
        if kind not in PROGRESS:
            self.counters["bad_requests"] += 1
            raise self._error(400, "invalid-value", f"progress-type {kind!r}")
        msg = inp.get("message", "")
        entry = {"type": kind, "message": str(msg)[:1000], "at": datetime.datetime.now(datetime.UTC).isoformat()}
        self.progress.setdefault(serial, []).append(entry)
        self.counters["reports"] += 1
        log.info("bootstrap progress %s %s", serial, kind, extra={"fields": {"serial": serial, "type": kind}})
        return web.Response(status=204)

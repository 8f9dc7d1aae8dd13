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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from bootstrap import sztp_data
from bootstrap.cms import SigningKey
from bootstrap.sztp import (
    GET_INPUT_LEAVES,
    GET_PATH,
    MEDIA,
    MODULE,
    NONCE_OCTETS,
    PROGRESS_TYPES,
    REPORT_COMPLETE_ONLY,
    REPORT_INPUT_NODES,
    REPORT_PATH,
    REPORTING_LEVELS,
    VERBOSE,
)
from controller.safe_text import safe

log = logging.getLogger("controller.sztp")

MAX_BODY = 64 * 1024
MAX_REPORTS_KEPT = 32  # progress reports kept per device (the last ones; all are counted)
MAX_REPORTS_AFTER_ENROLLMENT = 8  # the reports that finish a bootstrap once the box holds its LDevID
MAX_DEVICES = 4096  # devices whose reports are kept (the one heard from least recently goes first)


def _terminating(kind: str) -> bool:
    """The report that ends a bootstrap (RFC 8572 section 7.3): bootstrap-complete, a reboot, an error."""
    return kind in ("bootstrap-complete", "boot-image-installed-rebooting") or kind.endswith("-error")


class InputError(Exception):
    """RPC input that does not follow ietf-sztp-bootstrap-server (RFC 8572 section 7.3): the device's
    fault, answered with 400 and an RFC 8040 section 7.1 error naming the node."""

    def __init__(self, tag: str, path: str, message: str) -> None:
        super().__init__(message)
        self.tag, self.path, self.message = tag, path, message


def _node(rpc: str, name: str) -> str:
    return f"/{MODULE}:{rpc}/input/{name}"  # instance-identifier of an RPC input node (RFC 7951 6.11)


def _known(inp: dict, rpc: str, allowed: tuple[str, ...]) -> None:
    for name in inp:
        if name not in allowed:
            # RFC 7950 8.3.1: a node the schema does not have is an unknown-element
            raise InputError("unknown-element", _node(rpc, str(name)),
                             f"{name!r} is not an input of {rpc} (RFC 8572 section 7.3: {', '.join(allowed)})")


def _b64(value: object, path: str, what: str) -> bytes:
    try:
        if not isinstance(value, str):
            raise TypeError
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InputError("invalid-value", path, f"{what} is not base64 (RFC 7951 section 6.6)") from None


def check_get_input(inp: dict) -> bytes | None:
    """Validate get-bootstrapping-data input; returns the nonce, if any."""
    rpc = "get-bootstrapping-data"
    _known(inp, rpc, GET_INPUT_LEAVES)
    if "signed-data-preferred" in inp and inp["signed-data-preferred"] != [None]:
        raise InputError("invalid-value", _node(rpc, "signed-data-preferred"),
                         "signed-data-preferred is a YANG empty leaf: [null] (RFC 7951 section 6.9)")
    for leaf in ("hw-model", "os-name", "os-version"):
        if leaf in inp and not isinstance(inp[leaf], str):
            raise InputError("invalid-value", _node(rpc, leaf), f"{leaf} must be a string")
    if "nonce" not in inp:
        return None
    nonce = _b64(inp["nonce"], _node(rpc, "nonce"), "nonce")
    low, high = NONCE_OCTETS
    if not low <= len(nonce) <= high:
        raise InputError("invalid-value", _node(rpc, "nonce"), f"nonce must be {low}-{high} octets, not {len(nonce)}")
    return nonce


def check_report_input(inp: dict) -> tuple[str, str]:
    """Validate report-progress input; returns (progress-type, message)."""
    rpc = "report-progress"
    _known(inp, rpc, REPORT_INPUT_NODES)
    if "progress-type" not in inp:
        raise InputError("missing-element", _node(rpc, "progress-type"), "progress-type is mandatory")
    kind = inp["progress-type"]
    if not isinstance(kind, str) or kind not in PROGRESS_TYPES:
        raise InputError("invalid-value", _node(rpc, "progress-type"),
                         f"progress-type {kind!r} is not in the enumeration of RFC 8572 section 7.3")
    message = inp.get("message", "")
    if not isinstance(message, str):
        raise InputError("invalid-value", _node(rpc, "message"), "message must be a string")
    for name in REPORT_COMPLETE_ONLY:
        if name in inp and kind != "bootstrap-complete":
            # YANG "when ../progress-type = 'bootstrap-complete'" is false: RFC 7950 8.3.1, unknown-element
            raise InputError("unknown-element", _node(rpc, name), f"{name} goes only with bootstrap-complete")
    keys = inp.get("ssh-host-keys", {"ssh-host-key": []})
    entries = keys.get("ssh-host-key", []) if isinstance(keys, dict) and set(keys) <= {"ssh-host-key"} else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and set(e) == {"algorithm", "key-data"} and isinstance(e["algorithm"], str)
            for e in entries):
        raise InputError("invalid-value", _node(rpc, "ssh-host-keys"),
                         "ssh-host-keys holds a list ssh-host-key of {algorithm, key-data}")
    for e in entries:
        _b64(e["key-data"], _node(rpc, "ssh-host-keys"), "key-data")
    anchors = inp.get("trust-anchor-certs", {"trust-anchor-cert": []})
    certs = anchors.get("trust-anchor-cert", []) if isinstance(anchors, dict) and set(anchors) <= {
        "trust-anchor-cert"} else None
    if not isinstance(certs, list):
        raise InputError("invalid-value", _node(rpc, "trust-anchor-certs"),
                         "trust-anchor-certs holds a leaf-list trust-anchor-cert")
    for c in certs:
        _b64(c, _node(rpc, "trust-anchor-certs"), "trust-anchor-cert")
    return kind, message


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
    # What we ask devices to report (RFC 8572 section 7.3 reporting-level): "verbose" helps operators.
    reporting_level: str = VERBOSE
    # serial -> does that box hold a valid LDevID? SZTP is for boxes that have none: an enrolled box's IDevID
    # is refused (403), except for the few reports that finish the bootstrap that enrolled it
    enrolled: Callable[[str], bool] = lambda _serial: False
    progress: dict[str, deque[dict]] = field(default_factory=dict)  # the last MAX_REPORTS_KEPT per device
    counters: dict[str, int] = field(default_factory=lambda: {"served": 0, "refused": 0, "bad_requests": 0,
                                                               "reports": 0, "enrolled_refused": 0})
    # serial -> reports taken since it enrolled (None once its bootstrap ended: nothing more is taken)
    _after: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reporting_level not in REPORTING_LEVELS:
            raise ValueError(f"reporting_level must be one of {', '.join(REPORTING_LEVELS)}")

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

    def _refuse_enrolled(self, serial: str) -> web.HTTPException:
        self.counters["enrolled_refused"] += 1
        return self._error(403, "access-denied", f"the box {safe(serial, 80)} is enrolled: it holds an LDevID, and "
                                                 "SZTP is for boxes that have none (after a reset at the controller, "
                                                 "`nsg-controller gateway reset-identity`, it may bootstrap again)")

    def _admit_report(self, serial: str, kind: str) -> None:
        """After enrollment only the reports that end that bootstrap are taken: up to the terminating one, at
        most MAX_REPORTS_AFTER_ENROLLMENT; then the IDevID gets nothing here."""
        if not self.enrolled(serial):
            self._after.pop(serial, None)  # not (or no longer: reset) enrolled
            return
        taken = self._after.get(serial, 0)
        if taken is None or taken >= MAX_REPORTS_AFTER_ENROLLMENT:
            self._after[serial] = None
            raise self._refuse_enrolled(serial)
        self._after[serial] = None if _terminating(kind) else taken + 1
        while len(self._after) > MAX_DEVICES:
            del self._after[next(iter(self._after))]

    def _error(self, status: int, tag: str, message: str, *, error_type: str = "application",
               path: str | None = None) -> web.HTTPException:
        """RESTCONF errors (RFC 8040 7.1) in JSON."""
        error = {"error-type": error_type, "error-tag": tag, **({"error-path": path} if path else {}),
                 "error-message": message}
        body = {"ietf-restconf:errors": {"error": [error]}}
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
            raise self._error(400, "malformed-message", f"body must be {{'{MODULE}:input': {{...}}}}",
                              error_type="rpc")
        return inp

    def _bad_input(self, exc: InputError) -> web.HTTPException:
        self.counters["bad_requests"] += 1
        return self._error(400, exc.tag, exc.message, error_type="protocol", path=exc.path)

    # --- RPCs -------------------------------------------------------------------------------

    async def get_bootstrapping_data(self, request: web.Request) -> web.Response:
        serial = self._device(request)
        if self.enrolled(serial):
            raise self._refuse_enrolled(serial)
        inp = await self._input(request)
        try:
            nonce = check_get_input(inp)
        except InputError as exc:
            raise self._bad_input(exc) from None
        doc = self.onboarding(serial)
        if doc is None:
            self.counters["refused"] += 1
            raise self._error(404, "data-missing", f"no bootstrapping data for serial {safe(serial, 80)}")
        info: sztp_data.ConveyedInfo
        if self.redirect is not None and "signed-data-preferred" in inp:
            # The device cannot authenticate us: hand it, signed, the way to a server it can (RFC 8572
            # 5.5), so that what follows -- onboarding and progress reports -- runs over trusted TLS.
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
            "reporting-level": self.reporting_level,
            "conveyed-information": base64.b64encode(
                sztp_data.sign_conveyed(info, self.owner.key, self.owner.cert)).decode(),
            "owner-certificate": base64.b64encode(sztp_data.owner_certificate_bundle(self.owner.cert)).decode(),
            "ownership-voucher": base64.b64encode(voucher).decode(),
        }
        self.counters["served"] += 1
        log.info("bootstrapping data served", extra={"fields": {"serial": safe(serial, 80),
                                                                "nonce": nonce is not None}})
        return web.Response(text=json.dumps({f"{MODULE}:output": out}), content_type=MEDIA)

    async def report_progress(self, request: web.Request) -> web.Response:
        serial = self._device(request)
        inp = await self._input(request)
        try:
            kind, msg = check_report_input(inp)
        except InputError as exc:
            raise self._bad_input(exc) from None
        self._admit_report(serial, kind)
        entry = {"type": kind, "message": msg[:1000], "at": datetime.datetime.now(datetime.UTC).isoformat()}
        kept = self.progress.pop(serial, None)
        if kept is None:
            kept = deque(maxlen=MAX_REPORTS_KEPT)
            while len(self.progress) >= MAX_DEVICES:
                del self.progress[next(iter(self.progress))]
        self.progress[serial] = kept  # most recently heard last
        kept.append(entry)
        self.counters["reports"] += 1
        log.info("bootstrap progress %s %s", safe(serial, 80), kind, extra={"fields": {"serial": safe(serial, 80),
                                                                                       "type": kind}})
        return web.Response(status=204)

"""The signed artifacts of RFC 8572 SZTP: the ownership voucher (RFC 8366), the owner
certificate and the conveyed information, and the check that ties them together.

A device that does not trust a bootstrap server accepts only signed data (RFC 8572 sections
3 and 5.4), verified in this order:

    ownership voucher --signed by--> manufacturer (the trust anchor the device was built with)
        says: serial-number = ours, nonce = the one we sent (or expires-on in the future),
              pinned-domain-cert = the owner's trust anchor
    owner certificate --chains to--> pinned-domain-cert
    conveyed information --signed by--> owner certificate

Both documents are YANG data in JSON (RFC 7951): the voucher is ``ietf-voucher:voucher``
(RFC 8366 section 5.3), the conveyed information ``ietf-sztp-conveyed-info:redirect-information``
or ``...:onboarding-information`` (RFC 8572 section 6.3). Binary leaves are base64 (RFC 7951
6.6). Decoding is strict: unknown members, wrong JSON types and broken YANG constraints are
refused with a ``RemoteBootstrapError`` whose ``field`` is the path of the offending member.
Encoding our own data checks the same constraints and raises ``LocalBootstrapError``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bootstrap import cms, der
from bootstrap.errors import BootstrapError, CmsError, LocalBootstrapError, Reason, RemoteBootstrapError

# --- RFC constants -----------------------------------------------------------------------------

ID_CT_ANIMA_JSON_VOUCHER = "1.2.840.113549.1.9.16.1.40"     # RFC 8366 section 8.3 (RFC 8572 erratum 6807)
ID_CT_SZTP_CONVEYED_INFO_XML = "1.2.840.113549.1.9.16.1.42"  # RFC 8572 section 10.3
ID_CT_SZTP_CONVEYED_INFO_JSON = "1.2.840.113549.1.9.16.1.43"  # RFC 8572 section 10.3

VOUCHER = "ietf-voucher:voucher"
CONVEYED_MODULE = "ietf-sztp-conveyed-info"
REDIRECT = f"{CONVEYED_MODULE}:redirect-information"
ONBOARDING = f"{CONVEYED_MODULE}:onboarding-information"
ASSERTIONS = ("verified", "logged", "proximity")  # RFC 8366 YANG leaf "assertion"
VOUCHER_NONCE_LEN = (8, 32)                       # RFC 8366 YANG: binary { length "8..32" }
CONFIGURATION_HANDLING = ("merge", "replace")     # RFC 8572 YANG leaf "configuration-handling"
SHA_256 = "sha-256"                               # RFC 8572 YANG identity, a 32-octet hash
_VOUCHER_LEAVES = ("created-on", "expires-on", "assertion", "serial-number", "idevid-issuer", "pinned-domain-cert",
                   "domain-cert-revocation-checks", "nonce", "last-renewal-date")

# --- tuning ------------------------------------------------------------------------------------

# Vouchers are made by another machine's clock; a created-on this far ahead of ours is skew,
# not a forgery worth failing a bootstrap over.
CREATED_ON_SKEW = datetime.timedelta(minutes=5)

Fail = Callable[[str, str], BootstrapError]


def _remote(reason: Reason) -> Fail:
    return lambda path, why: RemoteBootstrapError(f"{path}: {why}", reason=reason, field=path)


def _local(path: str, why: str) -> BootstrapError:
    return LocalBootstrapError(f"{path}: {why}")


@contextlib.contextmanager
def _about(what: str, reason: Reason | None = None) -> Iterator[None]:
    """Prefix remote errors with the artifact they concern (optionally re-labelling the reason)."""
    try:
        yield
    except RemoteBootstrapError as exc:
        raise type(exc)(f"{what}: {exc}", reason=reason or exc.reason, field=exc.field) from None


def _aware(now: datetime.datetime) -> datetime.datetime:
    if not isinstance(now, datetime.datetime) or now.tzinfo is None:
        raise LocalBootstrapError("times must be timezone-aware datetimes")
    return now


# --- JSON (RFC 7951) readers -----------------------------------------------------------------------


def _load_json(data: bytes, fail: Fail, what: str) -> object:
    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in pairs:
            if key in out:
                raise fail(key, f"member appears twice in the {what}")
            out[key] = value
        return out

    def no_constants(name: str) -> object:
        raise fail("", f"{name} is not JSON")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except UnicodeDecodeError:
        raise fail("", f"the {what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise fail("", f"the {what} is not JSON ({exc})") from None


def _members(value: object, path: str, fail: Fail, allowed: Sequence[str], required: Sequence[str] = ()
             ) -> dict[str, object]:
    if not isinstance(value, dict):
        raise fail(path, f"must be a JSON object, not {type(value).__name__}")
    for name in value:
        if name not in allowed:
            raise fail(f"{path}/{name}", "unknown member")
    for name in required:
        if name not in value:
            raise fail(f"{path}/{name}", "mandatory member missing")
    return value


def _string(value: object, path: str, fail: Fail) -> str:
    if not isinstance(value, str):
        raise fail(path, f"must be a string, not {type(value).__name__}")
    return value


def _binary(value: object, path: str, fail: Fail) -> bytes:
    try:
        return base64.b64decode(_string(value, path, fail), validate=True)
    except (binascii.Error, ValueError):
        raise fail(path, "is not base64 (RFC 7951 6.6)") from None


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _list(value: object, path: str, fail: Fail) -> list[object]:
    if not isinstance(value, list):
        raise fail(path, f"must be a JSON array, not {type(value).__name__}")
    return value


# yang:date-and-time (RFC 6991 section 3)
_DATE_AND_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})")


def _date_and_time(value: object, path: str, fail: Fail) -> datetime.datetime:
    m = _DATE_AND_TIME.fullmatch(_string(value, path, fail))
    if m is None:
        raise fail(path, "is not a yang:date-and-time (e.g. 2019-04-30T12:00:00Z)")
    zone = "+00:00" if m[3] == "Z" else m[3]
    try:
        return datetime.datetime.fromisoformat(f"{m[1]}.{(m[2] or '0')[:6].ljust(6, '0')}{zone}").astimezone(
            datetime.UTC)
    except ValueError:
        raise fail(path, "is not a valid date and time") from None


def _format_time(value: datetime.datetime) -> str:
    return _aware(value).astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


# --- the ownership voucher (RFC 8366) ----------------------------------------------------------------


@dataclass(frozen=True)
class Voucher:
    """The ``ietf-voucher:voucher`` container (RFC 8366 section 5.3)."""

    serial_number: str
    pinned_domain_cert: x509.Certificate
    created_on: datetime.datetime
    assertion: str = "verified"
    expires_on: datetime.datetime | None = None
    nonce: bytes | None = None
    idevid_issuer: bytes | None = None
    domain_cert_revocation_checks: bool | None = None
    last_renewal_date: datetime.datetime | None = None


def _check_voucher(v: Voucher, fail: Fail) -> None:
    """The YANG constraints of RFC 8366 section 5.3 that JSON types do not already carry."""
    if not v.serial_number:
        raise fail(f"{VOUCHER}/serial-number", "is empty")
    if v.assertion not in ASSERTIONS:
        raise fail(f"{VOUCHER}/assertion", f"{v.assertion!r} is not one of {', '.join(ASSERTIONS)}")
    if v.nonce is not None and v.expires_on is not None:
        raise fail(f"{VOUCHER}/nonce", "must not appear together with expires-on (RFC 8366: must 'not(../expires-on)')")
    low, high = VOUCHER_NONCE_LEN
    if v.nonce is not None and not low <= len(v.nonce) <= high:
        raise fail(f"{VOUCHER}/nonce", f"is {len(v.nonce)} octets, must be {low}..{high}")
    if v.last_renewal_date is not None and v.expires_on is None:
        raise fail(f"{VOUCHER}/last-renewal-date", "requires expires-on (RFC 8366: must '../expires-on')")


def encode_voucher(v: Voucher) -> bytes:
    _check_voucher(v, _local)
    body: dict[str, object] = {"created-on": _format_time(v.created_on)}
    if v.expires_on is not None:
        body["expires-on"] = _format_time(v.expires_on)
    body["assertion"] = v.assertion
    body["serial-number"] = v.serial_number
    if v.idevid_issuer is not None:
        body["idevid-issuer"] = _b64(v.idevid_issuer)
    body["pinned-domain-cert"] = _b64(v.pinned_domain_cert.public_bytes(Encoding.DER))
    if v.domain_cert_revocation_checks is not None:
        body["domain-cert-revocation-checks"] = v.domain_cert_revocation_checks
    if v.nonce is not None:
        body["nonce"] = _b64(v.nonce)
    if v.last_renewal_date is not None:
        body["last-renewal-date"] = _format_time(v.last_renewal_date)
    return json.dumps({VOUCHER: body}, separators=(",", ":")).encode()


def decode_voucher(data: bytes) -> Voucher:
    """The voucher JSON, syntax and YANG constraints only (no policy, no clock)."""
    fail = _remote(Reason.MALFORMED_VOUCHER)
    top = _members(_load_json(data, fail, "voucher"), "", fail, (VOUCHER,), (VOUCHER,))
    body = _members(top[VOUCHER], VOUCHER, fail, _VOUCHER_LEAVES,
                    ("created-on", "assertion", "serial-number", "pinned-domain-cert"))

    def path(leaf: str) -> str:
        return f"{VOUCHER}/{leaf}"

    def opt(leaf: str, read: Callable[[object, str, Fail], object]) -> object:
        return read(body[leaf], path(leaf), fail) if leaf in body else None

    pinned = _binary(body["pinned-domain-cert"], path("pinned-domain-cert"), fail)
    try:
        (pinned_cert,) = cms.load_certificates([pinned])
    except CmsError as exc:
        raise fail(path("pinned-domain-cert"), f"is not a DER X.509 certificate ({exc})") from None
    checks = body.get("domain-cert-revocation-checks")
    if checks is not None and not isinstance(checks, bool):
        raise fail(path("domain-cert-revocation-checks"), "must be true or false")
    voucher = Voucher(
        serial_number=_string(body["serial-number"], path("serial-number"), fail),
        pinned_domain_cert=pinned_cert,
        created_on=_date_and_time(body["created-on"], path("created-on"), fail),
        assertion=_string(body["assertion"], path("assertion"), fail),
        expires_on=opt("expires-on", _date_and_time),  # type: ignore[arg-type]
        nonce=opt("nonce", _binary),  # type: ignore[arg-type]
        idevid_issuer=opt("idevid-issuer", _binary),  # type: ignore[arg-type]
        domain_cert_revocation_checks=checks,
        last_renewal_date=opt("last-renewal-date", _date_and_time),  # type: ignore[arg-type]
    )
    _check_voucher(voucher, fail)
    return voucher


def make_voucher(serial: str, pinned_domain_cert: x509.Certificate, manufacturer_key: cms.SigningKey,
                 manufacturer_cert: x509.Certificate, nonce: bytes | None = None,
                 expires: datetime.datetime | None = None, *, created: datetime.datetime,
                 assertion: str = "verified", idevid_issuer: bytes | None = None,
                 extra_certs: Sequence[x509.Certificate] = ()) -> bytes:
    """A signed ownership voucher (RFC 8366 section 5.4: CMS SignedData, eContentType
    id-ct-animaJSONVoucher), as the manufacturer (MASA) issues it. Give either ``nonce`` (the
    device's, from its request) or ``expires``; ``created`` is explicit so no clock is read here."""
    voucher = Voucher(serial, pinned_domain_cert, _aware(created), assertion,
                      _aware(expires) if expires is not None else None, nonce, idevid_issuer)
    return cms.sign(encode_voucher(voucher), ID_CT_ANIMA_JSON_VOUCHER, manufacturer_key, manufacturer_cert,
                    extra_certs)


def verify_voucher(cms_bytes: bytes, manufacturer_anchor: x509.Certificate, serial: str, *,
                   nonce: bytes | None = None, now: datetime.datetime, idevid_aki: bytes | None = None,
                   accept_assertions: Sequence[str] = ASSERTIONS) -> Voucher:
    """Check an ownership voucher as RFC 8572 section 5.4 asks of a device:

    - signed by the manufacturer, i.e. chains to ``manufacturer_anchor`` at ``now``;
    - serial-number is ours; idevid-issuer, if present, is our IDevID's authority key id;
    - if we sent ``nonce``, the voucher carries the same; otherwise it carries no nonce and an
      expires-on still in the future (a voucher with neither could be replayed forever);
    - created-on is not in the future; the assertion is one local policy accepts;
    - it does not demand revocation checks, which this device cannot perform.
    """
    now = _aware(now)
    with _about("ownership voucher"):
        signed = cms.verify(cms_bytes, ID_CT_ANIMA_JSON_VOUCHER, manufacturer_anchor, now=now)
        voucher = decode_voucher(signed.content)
    if voucher.serial_number != serial:
        raise RemoteBootstrapError(f"ownership voucher is for serial-number {voucher.serial_number!r}, "
                                   f"this device is {serial!r}", reason=Reason.VOUCHER_SERIAL,
                                   field=f"{VOUCHER}/serial-number")
    if voucher.idevid_issuer is not None and (
            idevid_aki is None or not hmac.compare_digest(voucher.idevid_issuer, idevid_aki)):
        raise RemoteBootstrapError("ownership voucher's idevid-issuer is not our IDevID's authority key identifier",
                                   reason=Reason.VOUCHER_POLICY, field=f"{VOUCHER}/idevid-issuer")
    if voucher.domain_cert_revocation_checks:
        raise RemoteBootstrapError("ownership voucher demands revocation checks, which this device cannot do",
                                   reason=Reason.VOUCHER_POLICY, field=f"{VOUCHER}/domain-cert-revocation-checks")
    if voucher.assertion not in accept_assertions:
        raise RemoteBootstrapError(f"ownership voucher assertion {voucher.assertion!r} is not accepted here",
                                   reason=Reason.VOUCHER_POLICY, field=f"{VOUCHER}/assertion")
    if voucher.created_on > now + CREATED_ON_SKEW:
        raise RemoteBootstrapError(f"ownership voucher created-on {_format_time(voucher.created_on)} is in the "
                                   f"future (now {_format_time(now)})", reason=Reason.VOUCHER_FUTURE,
                                   field=f"{VOUCHER}/created-on")
    if nonce is not None:
        if voucher.nonce is None or not hmac.compare_digest(voucher.nonce, nonce):
            what = "carries no nonce" if voucher.nonce is None else "carries a different nonce"
            raise RemoteBootstrapError(f"ownership voucher {what} than the one this device sent",
                                       reason=Reason.VOUCHER_NONCE, field=f"{VOUCHER}/nonce")
    elif voucher.nonce is not None:
        raise RemoteBootstrapError("ownership voucher carries a nonce, but this device sent none",
                                   reason=Reason.VOUCHER_NONCE, field=f"{VOUCHER}/nonce")
    elif voucher.expires_on is None:
        raise RemoteBootstrapError("ownership voucher has neither a nonce nor expires-on, so nothing limits its "
                                   "lifetime", reason=Reason.VOUCHER_NOT_FRESH, field=f"{VOUCHER}/expires-on")
    elif voucher.expires_on <= now:
        raise RemoteBootstrapError(f"ownership voucher expired at {_format_time(voucher.expires_on)} "
                                   f"(now {_format_time(now)})", reason=Reason.VOUCHER_EXPIRED,
                                   field=f"{VOUCHER}/expires-on")
    return voucher


# --- conveyed information (RFC 8572 section 6) --------------------------------------------------------


class BootstrapServer(NamedTuple):
    """One entry of redirect-information's bootstrap-server list."""

    address: str                      # inet:host
    port: int | None = None           # None: the YANG default, 443
    trust_anchor: bytes | None = None  # certs-only CMS (DER) for the server's TLS chain


@dataclass(frozen=True)
class RedirectInfo:
    servers: tuple[BootstrapServer, ...]


class ImageVerification(NamedTuple):
    hash_algorithm: str   # identity name: "sha-256", or "module:name" for another module's identity
    hash_value: bytes


@dataclass(frozen=True)
class BootImage:
    os_name: str | None = None
    os_version: str | None = None
    download_uris: tuple[str, ...] = ()
    image_verification: tuple[ImageVerification, ...] = ()


@dataclass(frozen=True)
class OnboardingInfo:
    boot_image: BootImage | None = None
    pre_configuration_script: bytes | None = None
    configuration_handling: str | None = None   # "merge" | "replace"
    configuration: bytes | None = None
    post_configuration_script: bytes | None = None


ConveyedInfo = RedirectInfo | OnboardingInfo

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_DOMAIN_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")     # RFC 6991 inet:domain-name, roughly
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")          # RFC 3986 scheme ":" then no blanks
_IDENTIFIER = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_.-]*:)?[A-Za-z_][A-Za-z0-9_.-]*")  # YANG identityref
_HEX_STRING = re.compile(r"(?:[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2})*)?")                 # yang:hex-string


def _is_host(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return len(address) <= 253 and _DOMAIN_NAME.fullmatch(address) is not None
    return True


def _check_redirect(info: RedirectInfo, fail: Fail) -> None:
    base = f"{REDIRECT}/bootstrap-server"
    if not info.servers:
        raise fail(base, "at least one bootstrap server is required (min-elements 1)")
    seen: set[str] = set()
    for i, server in enumerate(info.servers):
        if not isinstance(server.address, str) or not _is_host(server.address):
            raise fail(f"{base}[{i}]/address", f"{server.address!r} is neither an IP address nor a domain name")
        if server.address in seen:
            raise fail(f"{base}[{i}]/address", f"{server.address!r} is listed twice (it is the list key)")
        seen.add(server.address)
        if server.port is not None and (type(server.port) is not int or not 1 <= server.port <= 65535):
            raise fail(f"{base}[{i}]/port", f"{server.port!r} is not a port number 1..65535")
        if server.trust_anchor is not None:
            try:
                cms.parse_certs_only(server.trust_anchor)
            except CmsError as exc:
                raise fail(f"{base}[{i}]/trust-anchor", f"is not a certs-only CMS: {exc}") from None


def _check_onboarding(info: OnboardingInfo, fail: Fail) -> None:
    if info.configuration_handling not in (None, *CONFIGURATION_HANDLING):
        raise fail(f"{ONBOARDING}/configuration-handling",
                   f"{info.configuration_handling!r} is not one of {', '.join(CONFIGURATION_HANDLING)}")
    if (info.configuration is None) != (info.configuration_handling is None):
        # RFC 8572 YANG: each of the two leaves has a must-statement requiring the other.
        missing = "configuration-handling" if info.configuration_handling is None else "configuration"
        raise fail(f"{ONBOARDING}/{missing}", "configuration and configuration-handling go together")
    image = info.boot_image
    if image is None:
        return
    base = f"{ONBOARDING}/boot-image"
    for i, uri in enumerate(image.download_uris):
        if not isinstance(uri, str) or not _URI.fullmatch(uri):
            raise fail(f"{base}/download-uri[{i}]", f"{uri!r} is not a URI")
    if image.image_verification and not image.download_uris:
        raise fail(f"{base}/image-verification", "needs download-uri (must '../download-uri')")
    algorithms: set[str] = set()
    for i, check in enumerate(image.image_verification):
        where = f"{base}/image-verification[{i}]"
        if not _IDENTIFIER.fullmatch(check.hash_algorithm):
            raise fail(f"{where}/hash-algorithm", f"{check.hash_algorithm!r} is not an identity")
        if check.hash_algorithm in algorithms:
            raise fail(f"{where}/hash-algorithm", f"{check.hash_algorithm!r} is listed twice (it is the list key)")
        algorithms.add(check.hash_algorithm)
        if check.hash_algorithm == SHA_256 and len(check.hash_value) != 32:
            raise fail(f"{where}/hash-value", f"a SHA-256 hash is 32 octets, not {len(check.hash_value)}")


def _qualified(identity: str) -> str:
    return identity if ":" in identity else f"{CONVEYED_MODULE}:{identity}"


def encode_conveyed(info: ConveyedInfo) -> bytes:
    """JSON of ``ietf-sztp-conveyed-info`` (RFC 8572 section 6.3, RFC 7951)."""
    if isinstance(info, RedirectInfo):
        _check_redirect(info, _local)
        servers = []
        for s in info.servers:
            entry: dict[str, object] = {"address": s.address}
            if s.port is not None:
                entry["port"] = s.port
            if s.trust_anchor is not None:
                entry["trust-anchor"] = _b64(s.trust_anchor)
            servers.append(entry)
        return json.dumps({REDIRECT: {"bootstrap-server": servers}}, separators=(",", ":")).encode()
    if not isinstance(info, OnboardingInfo):
        raise LocalBootstrapError(f"cannot encode {type(info).__name__} as conveyed information")
    _check_onboarding(info, _local)
    body: dict[str, object] = {}
    if info.boot_image is not None:
        img, image = info.boot_image, {}
        for key, value in (("os-name", img.os_name), ("os-version", img.os_version)):
            if value is not None:
                image[key] = value
        if img.download_uris:
            image["download-uri"] = list(img.download_uris)
        if img.image_verification:
            # RFC 7951 6.8: an identity of this same module may go unprefixed; we always prefix.
            image["image-verification"] = [
                {"hash-algorithm": _qualified(c.hash_algorithm),
                 "hash-value": c.hash_value.hex(":")} for c in img.image_verification]
        body["boot-image"] = image
    for key, value in (("configuration-handling", info.configuration_handling),
                       ("pre-configuration-script", info.pre_configuration_script),
                       ("configuration", info.configuration),
                       ("post-configuration-script", info.post_configuration_script)):
        if value is not None:
            body[key] = value if isinstance(value, str) else _b64(value)
    return json.dumps({ONBOARDING: body}, separators=(",", ":")).encode()


def _decode_redirect(value: object, fail: Fail) -> RedirectInfo:
    body = _members(value, REDIRECT, fail, ("bootstrap-server",), ("bootstrap-server",))
    servers = []
    for i, item in enumerate(_list(body["bootstrap-server"], f"{REDIRECT}/bootstrap-server", fail)):
        where = f"{REDIRECT}/bootstrap-server[{i}]"
        entry = _members(item, where, fail, ("address", "port", "trust-anchor"), ("address",))
        port = entry.get("port")
        if port is not None and type(port) is not int:  # uint16 is a JSON number (RFC 7951 6.1)
            raise fail(f"{where}/port", f"must be a number, not {type(port).__name__}")
        anchor = _binary(entry["trust-anchor"], f"{where}/trust-anchor", fail) if "trust-anchor" in entry else None
        servers.append(BootstrapServer(_string(entry["address"], f"{where}/address", fail), port, anchor))
    info = RedirectInfo(tuple(servers))
    _check_redirect(info, fail)
    return info


def _decode_boot_image(value: object, fail: Fail) -> BootImage:
    base = f"{ONBOARDING}/boot-image"
    body = _members(value, base, fail, ("os-name", "os-version", "download-uri", "image-verification"))
    uris = [_string(u, f"{base}/download-uri[{i}]", fail)
            for i, u in enumerate(_list(body.get("download-uri", []), f"{base}/download-uri", fail))]
    checks = []
    for i, item in enumerate(_list(body.get("image-verification", []), f"{base}/image-verification", fail)):
        where = f"{base}/image-verification[{i}]"
        # hash-algorithm is the list key, so it is mandatory although the leaf does not say so.
        entry = _members(item, where, fail, ("hash-algorithm", "hash-value"), ("hash-algorithm", "hash-value"))
        algorithm = _string(entry["hash-algorithm"], f"{where}/hash-algorithm", fail)
        algorithm = algorithm.removeprefix(f"{CONVEYED_MODULE}:")  # RFC 7951 6.8: same module, prefix optional
        digest = _string(entry["hash-value"], f"{where}/hash-value", fail)
        if not _HEX_STRING.fullmatch(digest):
            raise fail(f"{where}/hash-value", "is not a yang:hex-string (e.g. 0a:1b:2c)")
        checks.append(ImageVerification(algorithm, bytes.fromhex(digest.replace(":", ""))))
    name, version = (_string(body[k], f"{base}/{k}", fail) if k in body else None for k in ("os-name", "os-version"))
    return BootImage(name, version, tuple(uris), tuple(checks))


def _decode_onboarding(value: object, fail: Fail) -> OnboardingInfo:
    body = _members(value, ONBOARDING, fail, ("boot-image", "pre-configuration-script", "configuration-handling",
                                              "configuration", "post-configuration-script"))
    pre, config, post = (_binary(body[k], f"{ONBOARDING}/{k}", fail) if k in body else None
                         for k in ("pre-configuration-script", "configuration", "post-configuration-script"))
    handling = body.get("configuration-handling")
    if handling is not None:
        handling = _string(handling, f"{ONBOARDING}/configuration-handling", fail)
    image = _decode_boot_image(body["boot-image"], fail) if "boot-image" in body else None
    info = OnboardingInfo(image, pre, handling, config, post)
    _check_onboarding(info, fail)
    return info


def decode_conveyed(json_bytes: bytes) -> ConveyedInfo:
    """Parse and validate conveyed-information JSON; raises RemoteBootstrapError naming the field."""
    fail = _remote(Reason.MALFORMED_CONVEYED)
    top = _members(_load_json(json_bytes, fail, "conveyed information"), "", fail, (REDIRECT, ONBOARDING))
    if len(top) != 1:
        raise fail("", "must hold exactly one of redirect-information and onboarding-information")
    if REDIRECT in top:
        return _decode_redirect(top[REDIRECT], fail)
    return _decode_onboarding(top[ONBOARDING], fail)


# --- the signed bundle (RFC 8572 sections 3 and 5.4) ---------------------------------------------------


def sign_conveyed(info: ConveyedInfo, owner_key: cms.SigningKey, owner_cert: x509.Certificate,
                  extra_certs: Sequence[x509.Certificate] = ()) -> bytes:
    """Signed conveyed information (RFC 8572 section 3.1): SignedData over the JSON,
    eContentType id-ct-sztpConveyedInfoJSON, signed by the owner."""
    return cms.sign(encode_conveyed(info), ID_CT_SZTP_CONVEYED_INFO_JSON, owner_key, owner_cert, extra_certs)


def encode_unsigned_conveyed(info: ConveyedInfo) -> bytes:
    """Unsigned conveyed information (RFC 8572 section 3.1), for trusted bootstrap servers only."""
    return cms.encapsulate(encode_conveyed(info), ID_CT_SZTP_CONVEYED_INFO_JSON)


def decode_unsigned_conveyed(data: bytes) -> ConveyedInfo:
    with _about("conveyed information"):
        return decode_conveyed(cms.decapsulate(data, ID_CT_SZTP_CONVEYED_INFO_JSON))


def owner_certificate_bundle(owner_cert: x509.Certificate, intermediates: Sequence[x509.Certificate] = ()) -> bytes:
    """The owner certificate artifact (RFC 8572 section 3.2): a certs-only SignedData with the
    owner certificate and the intermediates up to (optionally including) the pinned-domain-cert."""
    return cms.certs_only([owner_cert, *intermediates])


def owner_certificate_chain(data: bytes) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """(owner certificate, the other certificates) from the owner certificate artifact: a
    certs-only CMS, or -- accepted for convenience -- one bare DER certificate.

    DER sorts the certificates of a SET OF, so position says nothing: the owner certificate is
    the one end-entity of the bundle, i.e. the only certificate that issued none of the others."""
    with _about("owner certificate", Reason.OWNER_CERTIFICATE):
        top = der.children(der.parse(data, "owner certificate"), "owner certificate")
        if top and top[0].tag == der.OBJECT_IDENTIFIER:
            certs = cms.parse_certs_only(data)
        else:
            certs = cms.load_certificates([data], "owner certificate")
    leaves = [c for c in certs if not any(o is not c and o.issuer == c.subject for o in certs)]
    if len(leaves) != 1:
        names = ", ".join(c.subject.rfc4514_string() for c in leaves) or "none (the issuers form a loop)"
        raise RemoteBootstrapError(f"owner certificate artifact must hold one end-entity certificate, found: {names}",
                                   reason=Reason.OWNER_CERTIFICATE)
    return leaves[0], tuple(c for c in certs if c is not leaves[0])


def verify_bootstrapping_data(conveyed_cms: bytes, owner_certificate: bytes, voucher_cms: bytes,
                              manufacturer_anchor: x509.Certificate, serial: str, nonce: bytes | None,
                              now: datetime.datetime, *, idevid_aki: bytes | None = None) -> ConveyedInfo:
    """RFC 8572 section 5.4 for data from an untrusted bootstrap server: voucher, then owner
    certificate under the voucher's pinned-domain-cert, then the owner's signature on the
    conveyed information. Returns the decoded conveyed information."""
    now = _aware(now)
    voucher = verify_voucher(voucher_cms, manufacturer_anchor, serial, nonce=nonce, now=now, idevid_aki=idevid_aki)
    owner, others = owner_certificate_chain(owner_certificate)
    with _about("owner certificate is not under the voucher's pinned-domain-cert", Reason.OWNER_CERTIFICATE):
        cms.verify_chain(owner, others, voucher.pinned_domain_cert, now)

    def signed_by_owner(signer: x509.Certificate, _certs: tuple[x509.Certificate, ...]) -> bool:
        if signer != owner:
            raise RemoteBootstrapError(f"signed by {signer.subject.rfc4514_string()}, not by the owner certificate "
                                       f"{owner.subject.rfc4514_string()}", reason=Reason.NOT_SIGNED_BY_OWNER)
        return True

    with _about("conveyed information"):
        signed = cms.verify(conveyed_cms, ID_CT_SZTP_CONVEYED_INFO_JSON, signed_by_owner, known_certs=(owner,))
        return decode_conveyed(signed.content)

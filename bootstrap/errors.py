"""Errors of the zero-touch bootstrap, saying whose fault it was.

A ``RemoteBootstrapError`` means a bootstrap server (or whoever is on the path to it) sent
something we reject: malformed DER, a bad signature, a voucher for another device. It carries
a short ``reason`` code for logs and progress reports. The device gives up on that source of
bootstrapping data and moves on to the next one (RFC 8572 section 5.2).

A ``LocalBootstrapError`` means we asked for something impossible: a key that does not match
its certificate, a voucher with both a nonce and an expiry, a missing clock. That is a bug or a
misconfiguration here, never a reason to distrust a server.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Reason(StrEnum):
    """Why remote data was rejected. Values are stable: logs and tests match on them."""

    MALFORMED_DER = "malformed-der"            # not strict DER (RFC 5652 section 1.1 wants DER for signed attrs)
    MALFORMED_CMS = "malformed-cms"            # DER, but not the CMS structure we expect
    UNSUPPORTED_CMS = "unsupported-cms"        # a CMS feature or algorithm we do not implement
    WRONG_CONTENT_TYPE = "wrong-content-type"
    UNSIGNED = "unsigned"                      # signed data was required
    SIGNER_NOT_FOUND = "signer-not-found"
    BAD_ATTRIBUTES = "bad-signed-attributes"   # RFC 5652 section 5.3 / 11
    DIGEST_MISMATCH = "digest-mismatch"        # RFC 5652 section 5.4
    BAD_SIGNATURE = "bad-signature"            # RFC 5652 section 5.6
    UNTRUSTED = "untrusted-signer"             # the signature is fine, the signer is not ours
    BAD_CERTIFICATE = "bad-certificate"        # does not parse, or not valid now
    CHAIN = "chain-invalid"                    # RFC 5280 section 6 path problems
    MALFORMED_VOUCHER = "malformed-voucher"    # RFC 8366 section 5.3 YANG not followed
    VOUCHER_SERIAL = "voucher-serial-mismatch"
    VOUCHER_NONCE = "voucher-nonce-mismatch"
    VOUCHER_EXPIRED = "voucher-expired"
    VOUCHER_NOT_FRESH = "voucher-without-freshness"  # neither a nonce we sent nor an expiry
    VOUCHER_FUTURE = "voucher-created-in-future"
    VOUCHER_POLICY = "voucher-policy"          # assertion, idevid-issuer or revocation demands we refuse
    OWNER_CERTIFICATE = "owner-certificate-invalid"
    NOT_SIGNED_BY_OWNER = "not-signed-by-owner"
    MALFORMED_CONVEYED = "malformed-conveyed-information"
    MALFORMED_RESPONSE = "malformed-response"  # the RESTCONF answer itself (RFC 8572 section 7.3)
    TRANSPORT = "transport"                    # could not talk to the server, or it said no (HTTP status)
    SERVER_NOT_AUTHENTICATED = "server-not-authenticated"  # its TLS certificate fails our trust anchors
    CLIENT_CERTIFICATE_REFUSED = "client-certificate-refused"  # it dropped TLS after seeing our IDevID
    TOO_MANY_REDIRECTS = "too-many-redirects"  # redirect information leading on and on (a loop?)


class BootstrapError(Exception):
    """Base of all bootstrap errors."""

    fault: ClassVar[str] = "unknown"


class LocalBootstrapError(BootstrapError):
    """We asked for something impossible: a bug in the caller or our own configuration."""

    fault = "local"


class ActivationRequired(LocalBootstrapError):
    """The controller holds this gateway's enrollment (EST 202 + Retry-After, RFC 7030 section 4.2.3)
    until its activation code is given here (`nsg activate CODE`). Nothing is broken and no server is
    at fault: a person on this side has to act, so it is local."""


class RemoteBootstrapError(BootstrapError):
    """A server sent data we reject. ``reason`` is a ``Reason``; ``field`` names the offending
    member (e.g. ``onboarding-information/configuration``) when there is one."""

    fault = "remote"

    def __init__(self, message: str, *, reason: Reason, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


class CmsError(RemoteBootstrapError):
    """DER or CMS that does not parse as what it must be (the bytes came from the network)."""

    def __init__(self, message: str, *, reason: Reason = Reason.MALFORMED_CMS, field: str | None = None) -> None:
        super().__init__(message, reason=reason, field=field)

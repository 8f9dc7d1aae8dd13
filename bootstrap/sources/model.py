"""What every discovery source returns, and the errors and checks they share.

A source finds *where* to bootstrap from (RFC 8572 section 4: "sources of bootstrapping
data"); it never decides whether to trust it. Trust is the SZTP client's job: a server
without a trust anchor is an untrusted bootstrap server (RFC 8572 section 5.3), from which
only signed data may be accepted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import ClassVar, Protocol
from urllib.parse import urlsplit

from bootstrap.errors import BootstrapError

# RFC 1035 section 2.3.4: labels 1..63 octets, a name at most 255 octets on the wire
# (253 characters in dotted text without the root).
MAX_LABEL = 63
MAX_NAME_TEXT = 253
_LDH_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class DiscoveryError(BootstrapError):
    """Base of discovery errors. ``fault`` says whose fault it was; ``code`` carries the
    protocol's own error code where there is one (DNS RCODE, HTTP status, udhcpc exit)."""

    fault: ClassVar[str] = "unknown"

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LocalDiscoveryError(DiscoveryError):
    """Our side failed: a missing tool, a bad configuration, a socket we could not open."""

    fault = "local"


class RemoteProtocolError(DiscoveryError):
    """Whoever supplied the data (DHCP server, DNS server, mDNS responder, metadata service,
    the author of a file on removable media) sent something malformed or unacceptable."""

    fault = "remote"


@dataclass(frozen=True)
class SignedBootstrappingData:
    """RFC 8572 section 3: conveyed information, owner certificate and ownership voucher,
    each a CMS structure (DER), delivered inline instead of by a bootstrap server. Only
    carried, never checked here: the SZTP client verifies the signatures (section 5.4)."""

    conveyed_information: bytes
    owner_certificate: bytes
    ownership_voucher: bytes


@dataclass(frozen=True)
class BootstrapServer:
    """Where to bootstrap from.

    ``uri`` is the https base URI of an RFC 8572 bootstrap server (the SZTP client appends
    the RESTCONF resource paths); for ``inline`` data it names where the data was found
    instead (``file:`` RFC 8089, ``dns:`` RFC 4501).
    ``trust_anchor_der`` is an X.509 certificate (DER) to authenticate the server's TLS
    certificate with, or None: then the server is untrusted (RFC 8572 section 5.3).
    """

    uri: str
    source: str
    trust_anchor_der: bytes | None = None
    inline: SignedBootstrappingData | None = field(default=None, repr=False)


@dataclass
class DiscoveryContext:
    """Per-run facts sources need or learn from each other (never process-wide).

    DHCP fills in the domain and name servers a later DNS source uses; the metadata
    service fills in the instance id (the serial number of a cloud instance).
    """

    serial_number: str | None = None
    domain: str | None = None
    nameservers: list[str] = field(default_factory=list)
    instance_id: str | None = None


class Source(Protocol):
    """One source of bootstrap servers. Raises DiscoveryError (or OSError/TimeoutError
    from I/O) on failure; returns [] when it has nothing to offer."""

    name: str

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]: ...


def check_hostname(host: str, what: str = "host name") -> str:
    """A DNS host name in LDH syntax (RFC 1123 section 2.1), trailing root dot allowed."""
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > MAX_NAME_TEXT:
        raise RemoteProtocolError(f"{what} {host!r} is empty or longer than {MAX_NAME_TEXT} characters")
    labels = name.split(".")
    for label in labels:
        if not _LDH_LABEL.match(label):
            raise RemoteProtocolError(f"{what} {host!r} has an invalid label {label!r}")
    # RFC 3696 section 2: a top-level label is never all-numeric, so a name cannot pass for
    # a (malformed) IPv4 literal such as "1.2.3".
    if labels[-1].isdigit():
        raise RemoteProtocolError(f"{what} {host!r} ends in an all-numeric label")
    return name


def check_bootstrap_uri(uri: str, what: str = "bootstrap server URI") -> str:
    """RFC 8572 section 8.3: a bootstrap server URI uses the "https" scheme and names a host.

    We also refuse what no bootstrap server URI needs and what would make it ambiguous:
    non-ASCII or whitespace (RFC 3986 section 2), user info, a fragment.
    """
    if not isinstance(uri, str) or not uri:
        raise RemoteProtocolError(f"{what} is empty")
    if not uri.isascii() or any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        raise RemoteProtocolError(f"{what} {uri!r} has non-ASCII, blank or control characters")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise RemoteProtocolError(f"{what} {uri!r} does not parse: {exc}") from None
    if parts.scheme.lower() != "https":
        raise RemoteProtocolError(f"{what} {uri!r} must use the https scheme (RFC 8572 section 8.3)")
    if "@" in parts.netloc:
        raise RemoteProtocolError(f"{what} {uri!r} must not carry user information")
    if parts.fragment or uri.endswith("#"):
        raise RemoteProtocolError(f"{what} {uri!r} must not carry a fragment")
    host = parts.hostname
    if not host:
        raise RemoteProtocolError(f"{what} {uri!r} has no host")
    if port == 0:
        raise RemoteProtocolError(f"{what} {uri!r} has port 0")
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise RemoteProtocolError(f"{what} {uri!r} has an invalid IPv6 literal") from None
    elif not _is_ipv4(host):
        check_hostname(host, f"host of {what} {uri!r}")
    return uri


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True

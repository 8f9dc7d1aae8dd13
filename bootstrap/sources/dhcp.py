"""DHCPv4 as a source of bootstrap servers (RFC 8572 section 4, "DHCP Server"; section 8).

Two carriers, both untrusted (RFC 8572 section 4, "DHCP Server": DHCP data is unsigned, so
the servers it names are untrusted bootstrap servers):

* option 143, OPTION_V4_SZTP_REDIRECT (RFC 8572 section 8.1), whose payload is the
  bootstrap-server-list of section 8.3;
* vendor-specific option 43 (RFC 2132 section 8.4), answered by servers that match our vendor
  class identifier (option 60, ``VENDOR_CLASS``), with nsg's own sub-option layout below.

The parsers are sans-IO. ``DhcpSource`` runs busybox udhcpc once (``-q``: exit after the
lease) under the supervisor and hook protocol of bootstrap/udhcpc.py (shared with the
gateway's DHCP uplinks); it configures nothing itself. The lease's domain name (option 15) and
name servers (option 6) are handed on to the DNS source through the ``DiscoveryContext``.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    LocalDiscoveryError,
    RemoteProtocolError,
    check_bootstrap_uri,
    check_hostname,
)
from bootstrap.udhcpc import BOUND_EVENTS, Udhcpc, UdhcpcExit, write_hook

log = logging.getLogger("bootstrap.sources.dhcp")

# RFC 8572 section 8.1 / IANA "BOOTP Vendor Extensions and DHCP Options".
OPTION_V4_SZTP_REDIRECT = 143
# RFC 2132 section 8.4.
OPTION_VENDOR_SPECIFIC = 43
# RFC 2132 section 3.1 / 3.2: pad and end, also used inside option 43's encapsulation.
PAD = 0
END = 255

# nsg's vendor class (option 60) and its option 43 sub-options (our own definition):
#
#   sub-option 1, BOOTSTRAP-URI: one bootstrap server URI, ASCII, no terminator.
#   Repeat the sub-option for more servers; order is preference order.
#
#    0                   1                   2
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 ...
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-...
#   |  code = 1     |   length      |  URI (length octets)
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-...
#
# Other sub-option codes are reserved and ignored. dnsmasq: dhcp-option=vendor:nsg,1,"https://..."
VENDOR_CLASS = "nsg"
NSG_SUBOPT_BOOTSTRAP_URI = 1

# Tuning, not protocol.
UDHCPC_DISCOVERS = 3
UDHCPC_PAUSE_S = 1
DEFAULT_TIMEOUT_S = 10.0


def parse_option_143(payload: bytes) -> list[str]:
    """Decode an OPTION_V4_SZTP_REDIRECT payload (already concatenated if the server split
    it into several instances, RFC 3396) into bootstrap server URIs.

    RFC 8572 section 8.3, the bootstrap-server-list is a sequence of

        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-...-+-+-+-+-+-+-+
        |       uri-length              |          URI                  |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-...-+-+-+-+-+-+-+

    uri-length: 2 octets, network order, the length of URI; URI: an https URI.
    """
    if not payload:
        raise RemoteProtocolError("DHCP option 143 is empty: the bootstrap-server-list needs at least one URI")
    uris: list[str] = []
    at = 0
    while at < len(payload):
        if len(payload) - at < 2:
            raise RemoteProtocolError(f"DHCP option 143: {len(payload) - at} octet(s) left at offset {at}, "
                                      "too short for a uri-length (RFC 8572 section 8.3)")
        length = int.from_bytes(payload[at : at + 2], "big")
        at += 2
        if length == 0:
            raise RemoteProtocolError(f"DHCP option 143: uri-length 0 at offset {at - 2}")
        if length > len(payload) - at:
            raise RemoteProtocolError(f"DHCP option 143: uri-length {length} at offset {at - 2} runs past the "
                                      f"end of the option ({len(payload) - at} octets left)")
        uris.append(_decode_uri(payload[at : at + length], "DHCP option 143"))
        at += length
    return uris


def encode_option_143(uris: Iterable[str]) -> bytes:
    """The inverse of parse_option_143, for labs and tests that configure a DHCP server."""
    out = bytearray()
    for uri in uris:
        raw = uri.encode("ascii")
        if not 0 < len(raw) <= 0xFFFF:
            raise ValueError(f"URI of {len(raw)} octets does not fit a uri-length")
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def parse_option_43(payload: bytes) -> list[str]:
    """Decode vendor-specific information (RFC 2132 section 8.4: encapsulated options with the
    syntax of DHCP options, pad and end included) and return the URIs of nsg's sub-option 1."""
    uris: list[str] = []
    at = 0
    while at < len(payload):
        code = payload[at]
        if code == PAD:
            at += 1
            continue
        if code == END:
            if any(payload[at + 1 :]):
                raise RemoteProtocolError(f"DHCP option 43: data after the end sub-option at offset {at}")
            break
        if len(payload) - at < 2:
            raise RemoteProtocolError(f"DHCP option 43: sub-option {code} at offset {at} has no length octet")
        length = payload[at + 1]
        value = payload[at + 2 : at + 2 + length]
        if len(value) != length:
            raise RemoteProtocolError(f"DHCP option 43: sub-option {code} at offset {at} claims {length} octets, "
                                      f"{len(value)} present")
        if code == NSG_SUBOPT_BOOTSTRAP_URI:
            if not value:
                raise RemoteProtocolError(f"DHCP option 43: empty bootstrap URI sub-option at offset {at}")
            uris.append(_decode_uri(value, "DHCP option 43 sub-option 1"))
        at += 2 + length
    return uris


def encode_option_43(uris: Iterable[str]) -> bytes:
    """nsg sub-options for option 43 (no end marker: servers add their own)."""
    out = bytearray()
    for uri in uris:
        raw = uri.encode("ascii")
        if not 0 < len(raw) <= 255:
            raise ValueError(f"URI of {len(raw)} octets does not fit a sub-option")
        out += bytes((NSG_SUBOPT_BOOTSTRAP_URI, len(raw))) + raw
    return bytes(out)


def _decode_uri(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what}: URI is not ASCII ({raw[:40]!r})") from None
    return check_bootstrap_uri(text, f"{what} URI")


@dataclass(frozen=True)
class DhcpResult:
    """What one DHCP exchange told us. ``problems`` lists options that were present but
    unusable (each a remote fault); the usable rest is still returned."""

    interface: str
    address: str | None = None
    prefixlen: int | None = None
    routers: tuple[str, ...] = ()
    nameservers: tuple[str, ...] = ()
    domain: str | None = None
    uris_143: tuple[str, ...] = ()
    uris_43: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def uris(self) -> list[str]:
        """Option 143 first (the standard), then option 43; duplicates dropped."""
        return list(dict.fromkeys(self.uris_143 + self.uris_43))


def result_from_env(interface: str, env: dict[str, str]) -> DhcpResult:
    """Turn the hook variables of a bound lease into a DhcpResult (sans-IO)."""
    problems: list[str] = []
    values: dict[str, tuple[str, ...]] = {}
    for key, decode in (("opt143", parse_option_143), ("opt43", parse_option_43)):
        if key not in env:
            continue
        try:
            values[key] = tuple(decode(_unhex(env[key], key)))
        except RemoteProtocolError as exc:
            problems.append(str(exc))
    address = prefixlen = None
    if "ip" in env:
        try:
            iface = ipaddress.IPv4Interface(f"{env['ip']}/{env.get('mask', '32')}")
            address, prefixlen = str(iface.ip), iface.network.prefixlen
        except ValueError:
            problems.append(f"DHCP lease address {env['ip']!r}/{env.get('mask')!r} is invalid")
    domain = None
    names = env.get("domain", "").split()
    if names:
        # RFC 2132 section 3.17 defines one name; some servers send a search list. Use the first.
        try:
            domain = check_hostname(names[0], "DHCP option 15 domain name")
        except RemoteProtocolError as exc:
            problems.append(str(exc))
    return DhcpResult(
        interface=interface, address=address, prefixlen=prefixlen,
        routers=_ipv4_list(env.get("router", ""), "router (option 3)", problems),
        nameservers=_ipv4_list(env.get("dns", ""), "domain name server (option 6)", problems),
        domain=domain, uris_143=values.get("opt143", ()), uris_43=values.get("opt43", ()),
        problems=tuple(problems))


def _unhex(text: str, key: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        # udhcpc produced this from the server's bytes; garbage here is not the server's fault.
        raise LocalDiscoveryError(f"udhcpc reported {key} as non-hex {text[:40]!r}") from None


def _ipv4_list(text: str, what: str, problems: list[str]) -> tuple[str, ...]:
    out = []
    for item in text.split():
        try:
            out.append(str(ipaddress.IPv4Address(item)))
        except ValueError:
            problems.append(f"DHCP {what} {item!r} is not an IPv4 address")
    return tuple(out)


def udhcpc_argv(busybox: str, interface: str, hook: Path, vendor_class: str = VENDOR_CLASS) -> list[str]:
    return [busybox, "udhcpc", "-i", interface, "-f", "-q", "-n",
            "-t", str(UDHCPC_DISCOVERS), "-T", str(UDHCPC_PAUSE_S),
            "-O", str(OPTION_V4_SZTP_REDIRECT), "-O", str(OPTION_VENDOR_SPECIFIC), "-O", "domain", "-O", "dns",
            "-V", vendor_class, "-s", str(hook)]


LeaseHook = Callable[[DhcpResult], Awaitable[None]]


class DhcpSource:
    """Run one DHCP exchange on ``interface`` (in the caller's network namespace).

    ``apply_lease``, if given, is awaited with the result before the URIs are returned, so
    the caller can configure the address that later sources (DNS) need.
    """

    name = "dhcp"

    def __init__(self, interface: str, *, busybox: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 vendor_class: str = VENDOR_CLASS, apply_lease: LeaseHook | None = None) -> None:
        self.interface = interface
        self.busybox = busybox
        self.timeout = timeout
        self.vendor_class = vendor_class
        self.apply_lease = apply_lease
        self.last_result: DhcpResult | None = None

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]:
        result = await self.run()
        self.last_result = result
        if result is None:
            log.info("no DHCP lease on %s: no server answered", self.interface)
            return []
        for problem in result.problems:
            log.warning("DHCP server sent an unusable option: %s", problem)
        if result.domain:
            ctx.domain = result.domain
        if result.nameservers:
            ctx.nameservers = list(result.nameservers)
        if self.apply_lease is not None and result.address is not None:
            await self.apply_lease(result)
        if not result.uris and result.problems:
            raise RemoteProtocolError(result.problems[0])
        return [BootstrapServer(uri, self.name) for uri in result.uris]

    async def run(self) -> DhcpResult | None:
        """One udhcpc run; the bound lease, or None if no server answered."""
        busybox = self.busybox or shutil.which("busybox")
        if not busybox:
            raise LocalDiscoveryError("busybox not found: cannot run udhcpc")
        with tempfile.TemporaryDirectory(prefix="nsg-sztp-dhcp-") as tmp:
            proc = Udhcpc(udhcpc_argv(busybox, self.interface, write_hook(Path(tmp)), self.vendor_class))
            try:
                done = await proc.run(timeout=self.timeout)
            except TimeoutError:  # before OSError, of which it is a subclass
                raise LocalDiscoveryError(f"udhcpc on {self.interface} did not finish in {self.timeout} s") from None
            except OSError as exc:
                raise LocalDiscoveryError(f"cannot start udhcpc: {exc}") from None
        return self._result(done)

    def _result(self, done: UdhcpcExit) -> DhcpResult | None:
        if not done.events:
            # udhcpc runs the hook ("deconfig") as soon as it holds the interface; no event at
            # all means it never got that far (no such interface, no permission).
            raise LocalDiscoveryError(f"udhcpc failed on {self.interface} (exit {done.returncode}): "
                                      f"{' / '.join(done.stderr)}", code=done.returncode)
        bound = [ev.env for ev in done.events if ev.event in BOUND_EVENTS]
        if not bound:
            return None
        return result_from_env(self.interface, bound[-1])


"""A DHCP lease as the dataplane consumes it, and its decoding from udhcpc's hook variables
(bootstrap/udhcpc.py reports them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from bootstrap.sources.model import RemoteProtocolError, check_hostname
from nsg.model.config import is_unicast

MAX_NAMESERVERS = 3  # what a resolver reads of resolv.conf (glibc MAXNS)


@dataclass(frozen=True)
class Lease:
    address: IPv4Interface
    gateway: IPv4Address | None = None
    mtu: int | None = None
    lease_s: int | None = None
    dns: tuple[IPv4Address, ...] = ()  # option 6, the usable ones, in the server's order (at most 3)
    domain: str | None = None  # option 15, when it is a host name


class LeaseError(ValueError):
    """The DHCP server (remote) sent something we cannot use."""


def lease_from_env(env: Mapping[str, str]) -> Lease:
    """Build a Lease from udhcpc's script variables (ip, mask, router, mtu, lease, dns, domain).

    Everything here came off the network: validate before use.
    """
    try:
        ip = IPv4Address(env["ip"])
        prefix = int(env.get("mask", "32"))
        iface = IPv4Interface(f"{ip}/{prefix}")
    except (KeyError, ValueError) as exc:
        raise LeaseError(f"lease without a usable address/mask: {exc}") from None
    if not is_unicast(ip):
        raise LeaseError(f"lease address {ip} is not unicast")
    gateway = None
    for cand in env.get("router", "").split():
        try:
            g = IPv4Address(cand)
        except ValueError:
            continue
        if g in iface.network and g != ip:
            gateway = g
            break
    mtu = None
    if env.get("mtu"):
        try:
            mtu = int(env["mtu"])
        except ValueError:
            raise LeaseError(f"lease mtu {env['mtu']!r} is not a number") from None
        if not 576 <= mtu <= 9000:
            raise LeaseError(f"lease mtu {mtu} is out of range 576-9000")
    lease_s = None
    if env.get("lease", "").isdigit():
        lease_s = int(env["lease"])
    return Lease(address=iface, gateway=gateway, mtu=mtu, lease_s=lease_s, dns=name_servers(env.get("dns", "")),
                 domain=domain_name(env.get("domain", "")))


def name_servers(text: str) -> tuple[IPv4Address, ...]:
    """Option 6's unicast IPv4 addresses; anything else in it is skipped (the lease stays usable)."""
    out: list[IPv4Address] = []
    for cand in text.split():
        try:
            a = IPv4Address(cand)
        except ValueError:
            continue
        if is_unicast(a) and a not in out:
            out.append(a)
    return tuple(out[:MAX_NAMESERVERS])


def domain_name(text: str) -> str | None:
    """Option 15 when it is one host name in LDH syntax (bootstrap's check_hostname), else None: it goes
    into resolv.conf."""
    words = text.split()
    if len(words) != 1:
        return None
    try:
        return check_hostname(words[0], "DHCP option 15 domain name").lower()
    except RemoteProtocolError:
        return None

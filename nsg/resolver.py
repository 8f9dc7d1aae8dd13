"""The box's own name resolution: resolv.conf from the name servers its uplinks have, in the config's
uplink order: an uplink's own ``dns`` in the config (a static uplink's, or one that overrides its lease),
else what its DHCP lease gave (option 6; option 15's domain as the search list). The appliance's
/etc/resolv.conf is a link to /run/nsg/resolv.conf (its root is read-only); `nsg run --resolv-conf PATH`
says where to write, and without it nsg writes none (a namespace gateway leaves the host's resolver alone).

render() is pure; write() replaces the file atomically (a reader never sees half a file) and only when
its text changed. Everything in the text was validated when the lease or the config was read
(nsg.uplinks.lease, nsg.model): addresses are IPv4 unicast, the domain is one LDH host name, so a DHCP
server cannot add lines."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from nsg.uplinks.lease import MAX_NAMESERVERS

HEADER = "# written by nsg from its uplinks' name servers (config, else DHCP); nsg rewrites this file\n"


@dataclass(frozen=True)
class Resolver:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


def gather(sources: Iterable[tuple[Sequence[IPv4Address], str | None]]) -> Resolver:
    """Each uplink's (name servers, domain), in uplink order: the first uplink's servers first, at most
    three in all, no repeats; the domains as the search list."""
    servers: list[str] = []
    search: list[str] = []
    for dns, domain in sources:
        servers += [str(a) for a in dns if str(a) not in servers]
        if domain and domain not in search:
            search.append(domain)
    return Resolver(tuple(servers[:MAX_NAMESERVERS]), tuple(search[:6]))


def render(r: Resolver) -> str:
    lines = [HEADER]
    if r.search:
        lines.append(f"search {' '.join(r.search)}\n")
    lines += [f"nameserver {a}\n" for a in r.nameservers]
    if not r.nameservers:
        lines.append("# no uplink's lease named a name server\n")
    return "".join(lines)


def write(path: Path, text: str) -> bool:
    """``text`` into ``path`` (mode 0644, atomically); False when it held that text already."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    tmp = path.with_name(f".{path.name}.nsg-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True

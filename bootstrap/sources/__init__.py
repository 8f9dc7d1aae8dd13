"""Discovery of bootstrap servers (RFC 8572 section 4, "Sources of Bootstrapping Data").

Sources are tried one after the other in a fixed order, local and specific before remote
and generic:

    file (removable media) -> dhcp (options 143, 43) -> dns (RFC 8572 section 4, "DNS Server")
        -> mdns (DNS-SD) -> imds (cloud metadata) -> default (built-in URI)

By default discovery stops at the first source that names at least one server; the SZTP
client comes back with ``collect_all=True`` (or discovers again) when those all fail. A
source that fails is logged and counted, and the next one is tried: one broken DHCP server
must not keep a gateway from bootstrapping off a USB stick or the default server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    DiscoveryError,
    LocalDiscoveryError,
    RemoteProtocolError,
    SignedBootstrappingData,
    Source,
)

__all__ = [
    "SOURCE_ORDER",
    "BootstrapServer",
    "DiscoveryContext",
    "DiscoveryError",
    "DiscoveryStats",
    "LocalDiscoveryError",
    "RemoteProtocolError",
    "SignedBootstrappingData",
    "Source",
    "discover",
    "order_sources",
    "standard_sources",
]

log = logging.getLogger("bootstrap.sources")

SOURCE_ORDER = ("file", "dhcp", "dns", "mdns", "imds", "default")
SOURCE_TIMEOUT_S = 30.0  # tuning: a cap per source on top of each source's own timeouts


@dataclass
class DiscoveryStats:
    """Counters per source name, kept by the caller across discovery rounds."""

    attempts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    empty: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    last_error: dict[str, str] = field(default_factory=dict)


def order_sources(sources: Sequence[Source]) -> list[Source]:
    """Sort into SOURCE_ORDER (stable); sources of other names go just before "default"."""
    rank = {name: i for i, name in enumerate(SOURCE_ORDER)}
    other = rank["default"] - 0.5
    return sorted(sources, key=lambda s: rank.get(s.name, other))


async def discover(sources: Sequence[Source], ctx: DiscoveryContext | None = None, *,
                   stats: DiscoveryStats | None = None, collect_all: bool = False,
                   source_timeout: float = SOURCE_TIMEOUT_S) -> list[BootstrapServer]:
    """Try ``sources`` in SOURCE_ORDER; the servers of the first that names any (or of all,
    with ``collect_all``), duplicates (same URI) dropped."""
    ctx = ctx if ctx is not None else DiscoveryContext()
    stats = stats if stats is not None else DiscoveryStats()
    found: list[BootstrapServer] = []
    seen: set[str] = set()
    for source in order_sources(sources):
        name = source.name
        stats.attempts[name] += 1
        try:
            servers = await asyncio.wait_for(source.discover(ctx), source_timeout)
        except DiscoveryError as exc:
            _failed(stats, name, exc.fault, exc)
            continue
        except TimeoutError:
            _failed(stats, name, "local", f"no result within {source_timeout} s")
            continue
        except OSError as exc:
            _failed(stats, name, "local", exc)
            continue
        fresh = [s for s in servers if s.uri not in seen]
        if not fresh:
            stats.empty[name] += 1
            log.info("discovery source %s named no bootstrap server", name)
            continue
        stats.found[name] += 1
        seen.update(s.uri for s in fresh)
        found += fresh
        log.info("discovery source %s named %s", name, ", ".join(s.uri for s in fresh))
        if not collect_all:
            break
    return found


def _failed(stats: DiscoveryStats, name: str, fault: str, exc: object) -> None:
    stats.failures[name] += 1
    stats.last_error[name] = f"{fault}: {exc}"
    log.warning("discovery source %s failed (%s fault): %s", name, fault, exc)


def standard_sources(*, media_dirs: Sequence[Path | str] | None = None, interface: str | None = None,
                     use_mdns: bool = True, imds_url: str | None = None,
                     default_uri: str | None = None) -> list[Source]:
    """The usual set, in order: removable media (``media_dirs``, or removable mounts),
    DHCP + DNS on ``interface`` if given, mDNS, the metadata service if ``imds_url`` is given
    (AMI builds pass imds.DEFAULT_BASE_URL), and the built-in default."""
    from bootstrap.sources.default import DEFAULT_BOOTSTRAP_URI, DefaultSource
    from bootstrap.sources.file import FileSource

    out: list[Source] = [FileSource(media_dirs)]
    if interface is not None:
        from bootstrap.sources.dhcp import DhcpSource
        from bootstrap.sources.dns import DnsSource

        out += [DhcpSource(interface), DnsSource()]
    if use_mdns:
        from bootstrap.sources.mdns import MdnsSource

        out.append(MdnsSource())
    if imds_url is not None:
        from bootstrap.sources.imds import ImdsSource

        out.append(ImdsSource(imds_url))
    out.append(DefaultSource(default_uri or DEFAULT_BOOTSTRAP_URI))
    return out

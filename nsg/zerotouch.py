"""The gateway's bootstrap mode: from an empty box (factory identity only) to a controller URL.

DHCP on the WAN port comes first: its lease is applied at once (marked as nsg's, so the
controller's config later replaces it cleanly) and its options name bootstrap servers. Then the
bootstrap driver (bootstrap/driver.py) does SZTP and EST. Failures are retried with jittered
backoff; the state shows in `nsg status`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from bootstrap.driver import Bootstrapper, Onboarding, Server
from bootstrap.errors import ActivationRequired, BootstrapError
from bootstrap.identity import FileIdentityStore, IdentityError
from bootstrap.sources import DiscoveryStats, discover
from bootstrap.sources.default import DEFAULT_TRUST_ANCHOR_DER, DefaultSource
from bootstrap.sources.dhcp import DhcpResult, DhcpSource
from bootstrap.sources.dns import DnsSource
from bootstrap.sources.file import FileSource
from bootstrap.sources.imds import ImdsSource
from bootstrap.sources.mdns import MdnsSource
from bootstrap.sources.model import DiscoveryContext
from nsg import resolver
from nsg.backoff import Backoff
from nsg.dataplane.errors import DataplaneError
from nsg.dataplane.types import AddAddr, Addr, AddRoute, Op, Route, SetUp
from nsg.model.status import BootstrapStatus, DiscoveryStatus
from nsg.uplinks.lease import domain_name, name_servers

log = logging.getLogger("nsg.zerotouch")


class ZeroTouch:
    def __init__(self, state_dir: Path, wan: str, apply_op: Callable[[Op], None], *,
                 media_dirs: list[Path] | None = None, default_uri: str | None = None,
                 imds_url: str | None = None, resolv_conf: Path | None = None,
                 backoff: tuple[float, float] = (2.0, 60.0)):
        self.identity = FileIdentityStore(state_dir / "identity")
        self.wan = wan
        self.apply_op = apply_op
        self.media_dirs = media_dirs
        self.default_uri = default_uri
        self.imds_url = imds_url
        self.resolv_conf = resolv_conf  # the bootstrap lease's name servers go here (nsg/resolver.py)
        self.backoff = backoff
        self.stats = DiscoveryStats()
        self.state = "discovering"
        self.attempts = 0
        self.last_error: str | None = None

    def bootstrapped(self) -> Onboarding | None:
        """The onboarding document once bootstrapped (SZTP then stops for good)."""
        return Bootstrapper(self.identity).done()

    async def _apply_lease(self, lease: DhcpResult) -> None:
        """Make the lease usable now: address, link up, default route (all marked as nsg's)."""
        if lease.address is None or lease.prefixlen is None:
            return
        ops: list[Op] = [SetUp(self.wan), AddAddr(Addr(self.wan, f"{lease.address}/{lease.prefixlen}"))]
        net = ipaddress.IPv4Network(f"{lease.address}/{lease.prefixlen}", strict=False)
        gw = next((r for r in lease.routers if ipaddress.IPv4Address(r) in net), None)
        if gw:
            ops.append(AddRoute(Route("0.0.0.0/0", self.wan, gw, None, 100)))
        for op in ops:
            try:
                await asyncio.to_thread(self.apply_op, op)
            except DataplaneError as exc:
                if exc.errno != 17:  # EEXIST: a renewal of what is there
                    raise
        if self.resolv_conf is not None:  # a controller or bootstrap URL may name a host
            names = resolver.gather([(name_servers(" ".join(lease.nameservers)), domain_name(lease.domain or ""))])
            try:
                await asyncio.to_thread(resolver.write, self.resolv_conf, resolver.render(names))
            except OSError as exc:
                log.warning("cannot write %s: %s", self.resolv_conf, exc)
        log.info("bootstrap lease applied", extra={"fields": {"interface": self.wan, "address": lease.address,
                                                              "gateway": gw, "dns": list(lease.nameservers)}})

    def _sources(self) -> list:
        out = [FileSource(self.media_dirs), DhcpSource(self.wan, apply_lease=self._apply_lease), DnsSource(),
               MdnsSource()]
        if self.imds_url:  # AMI builds: the instance's user-data names the controller
            out.append(ImdsSource(self.imds_url))
        if self.default_uri:
            out.append(DefaultSource(self.default_uri))
        return out

    async def run(self) -> Onboarding:
        backoff = Backoff(*self.backoff)
        while True:
            self.attempts += 1
            try:
                done = self.bootstrapped()
                if done:
                    self.state = "done"
                    return done
                self.state = "discovering"
                # a box's port comes up down: DHCP (and mDNS) need the link up before the first lease
                await asyncio.to_thread(self.apply_op, SetUp(self.wan))
                ctx = DiscoveryContext(serial_number=self.identity.serial())
                found = await discover(self._sources(), ctx, stats=self.stats)
                servers = [Server(s.uri.rstrip("/"), _anchors(s.trust_anchor_der), s.source)
                           for s in found if s.inline is None]
                if not servers:
                    raise BootstrapError("no bootstrap server found")
                self.state = "bootstrapping"
                # the product's built-in anchor authenticates any bootstrap server it signed for (RFC 8572 5.1)
                doc = await Bootstrapper(self.identity, bootstrap_anchors=_anchors(DEFAULT_TRUST_ANCHOR_DER)).run(
                    servers)
                self.state = "done"
                self.last_error = None
                return doc
            except (BootstrapError, IdentityError, DataplaneError, OSError) as exc:
                self.last_error = str(exc)
                # the type says it, not the text: a server's words could contain anything
                self.state = "activation-required" if isinstance(exc, ActivationRequired) else "retrying"
                log.warning("bootstrap attempt failed", extra={"fields": {"attempt": self.attempts,
                                                                          "error": str(exc)}})
            await asyncio.sleep(backoff.next())

    def status(self) -> BootstrapStatus:
        return BootstrapStatus(state=self.state, attempts=self.attempts, last_error=self.last_error,
                               discovery=DiscoveryStatus(attempts=self.stats.attempts, failures=self.stats.failures,
                                                         last_error=self.stats.last_error))


def _anchors(der: bytes | None) -> tuple[x509.Certificate, ...]:
    return (x509.load_der_x509_certificate(der),) if der else ()

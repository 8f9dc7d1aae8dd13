"""mDNS / DNS-SD as a source of bootstrap servers, with python-zeroconf.

Browses ``_sztp._tcp.local.`` (RFC 6763 service type; RFC 6762 multicast DNS) on the local
links and resolves each instance to address, port and TXT. The optional TXT key ``path``
(RFC 6763 section 6 key=value syntax, as DNS-SD uses for http services) is a base path: the
URI is ``https://<address>:<port><path>`` and the SZTP client appends the RESTCONF resources
(``/restconf/operations/...``) to it, as to every bootstrap server URI.

Note: RFC 8572 section 4 ("DNS Server") also describes mDNS queries of its own ``_sztp`` names under
``local``; nsg uses DNS-SD browsing instead because stock responders (avahi, Bonjour) publish
DNS-SD services without custom zone data. Like all DNS data it is unauthenticated, so these
are untrusted bootstrap servers (RFC 8572 section 5.3).

The address/port/TXT -> URI conversion (``uri_from_service``) is sans-IO; only
``MdnsSource.discover`` touches the network, in the caller's network namespace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping, Sequence

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    LocalDiscoveryError,
    RemoteProtocolError,
    check_bootstrap_uri,
    check_hostname,
)

log = logging.getLogger("bootstrap.sources.mdns")

SERVICE_TYPE = "_sztp._tcp.local."
TXT_PATH = b"path"
MAX_PATH = 1024

# Tuning: stop browsing this long after the first answer (more responders answer within
# the same burst, RFC 6762 section 6: 20-120 ms response delay), or after browse_time.
SETTLE_S = 0.3
BROWSE_TIME_S = 2.0
RESOLVE_TIMEOUT_S = 2.0


def uri_from_service(addresses: Sequence[str], server: str | None, port: int | None,
                     properties: Mapping[bytes, bytes | None], instance: str) -> str:
    """Build the bootstrap URI of one resolved DNS-SD instance.

    Prefers an IPv4 address (reachable without an mDNS-aware resolver), else the target
    host name of the SRV record.
    """
    if port is None or not 0 < port <= 0xFFFF:
        raise RemoteProtocolError(f"mDNS service {instance!r} has no valid port ({port!r})")
    host = None
    for addr in addresses:
        try:
            host = str(ipaddress.IPv4Address(addr))
            break
        except ValueError:
            continue
    if host is None:
        if not server:
            raise RemoteProtocolError(f"mDNS service {instance!r} has neither an IPv4 address nor a host name")
        host = check_hostname(server, f"mDNS service {instance!r} host")
    path = ""
    raw = properties.get(TXT_PATH)
    if raw is not None:
        try:
            path = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"mDNS service {instance!r}: TXT path is not ASCII") from None
        if not path.startswith("/") or len(path) > MAX_PATH or "?" in path or "#" in path:
            raise RemoteProtocolError(f"mDNS service {instance!r}: TXT path {path[:60]!r} must be an absolute "
                                      f"path of at most {MAX_PATH} characters without query or fragment")
    return check_bootstrap_uri(f"https://{host}:{port}{path}", f"URI of mDNS service {instance!r}")


class MdnsSource:
    """Browse for ``service_type`` for up to ``browse_time`` seconds, then resolve."""

    name = "mdns"

    def __init__(self, *, service_type: str = SERVICE_TYPE, browse_time: float = BROWSE_TIME_S,
                 resolve_timeout: float = RESOLVE_TIMEOUT_S, interfaces: list[str] | None = None) -> None:
        self.service_type = service_type
        self.browse_time = browse_time
        self.resolve_timeout = resolve_timeout
        self.interfaces = interfaces  # IPv4 addresses to bind to; None = all

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]:
        try:
            azc = AsyncZeroconf(interfaces=self.interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise LocalDiscoveryError(f"cannot start mDNS: {exc}") from None
        try:
            names = await self._browse(azc.zeroconf)
            out: list[BootstrapServer] = []
            errors: list[RemoteProtocolError] = []
            for name in names:
                try:
                    uri = await self._resolve(azc.zeroconf, name)
                except RemoteProtocolError as exc:
                    log.warning("%s", exc)
                    errors.append(exc)
                    continue
                if uri is not None:
                    out.append(BootstrapServer(uri, self.name))
            if not out and errors:
                raise errors[0]
            return list({s.uri: s for s in out}.values())
        finally:
            await azc.async_close()

    async def _browse(self, zc: Zeroconf) -> list[str]:
        names: list[str] = []
        first = asyncio.Event()

        def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
            if state_change is ServiceStateChange.Added and name not in names:
                names.append(name)
                first.set()

        browser = AsyncServiceBrowser(zc, [self.service_type], handlers=[on_change])
        try:
            try:
                await asyncio.wait_for(first.wait(), self.browse_time)
            except TimeoutError:
                return []
            await asyncio.sleep(SETTLE_S)
            return sorted(names)
        finally:
            await browser.async_cancel()

    async def _resolve(self, zc: Zeroconf, name: str) -> str | None:
        info = AsyncServiceInfo(self.service_type, name)
        if not await info.async_request(zc, int(self.resolve_timeout * 1000)):
            log.info("mDNS service %s did not resolve", name)
            return None
        return uri_from_service(info.parsed_addresses(IPVersion.V4Only), info.server, info.port,
                                info.properties, name)

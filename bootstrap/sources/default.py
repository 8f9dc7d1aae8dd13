"""The built-in default bootstrap server: the last resort when no other source named one.

A product build sets ``DEFAULT_BOOTSTRAP_URI`` (and usually ``DEFAULT_TRUST_ANCHOR_DER``, the
vendor's CA, so the default server is a trusted bootstrap server in RFC 8572 section 5.3's
sense). The placeholder uses the reserved ".example" top-level domain (RFC 2606), so an
unconfigured build fails to resolve instead of contacting a stranger.
"""

from __future__ import annotations

from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    LocalDiscoveryError,
    RemoteProtocolError,
    check_bootstrap_uri,
)

DEFAULT_BOOTSTRAP_URI = "https://sztp.nsg-bootstrap.example"
DEFAULT_TRUST_ANCHOR_DER: bytes | None = None


class DefaultSource:
    name = "default"

    def __init__(self, uri: str = DEFAULT_BOOTSTRAP_URI, trust_anchor_der: bytes | None = DEFAULT_TRUST_ANCHOR_DER):
        try:
            self.uri = check_bootstrap_uri(uri, "default bootstrap server URI")
        except RemoteProtocolError as exc:
            # A configured constant: if it is wrong, the fault is ours, not a peer's.
            raise LocalDiscoveryError(str(exc)) from None
        self.trust_anchor_der = trust_anchor_der

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]:
        return [BootstrapServer(self.uri, self.name, trust_anchor_der=self.trust_anchor_der)]

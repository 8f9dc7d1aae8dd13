"""Zero-touch bootstrap, start to finish (RFC 8572 section 5): from a list of bootstrap servers to a
device that holds an LDevID and knows its controller.

    servers (discovery order) --get-bootstrapping-data--> redirect-information: servers in front
                                                      \\-> onboarding-information: nsg onboarding doc
    onboarding doc --> EST simpleenroll (RFC 7030) --> LDevID + controller trust anchor on disk
                   --> report-progress bootstrap-complete (trusted servers only)

Once bootstrapped (``onboarding.json`` exists) the device does not run SZTP again.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootstrap import cms, est, sztp, sztp_data
from bootstrap.errors import BootstrapError, LocalBootstrapError, Reason, RemoteBootstrapError
from bootstrap.identity import FileIdentityStore, write_private

log = logging.getLogger("bootstrap")

ONBOARDING = "onboarding.json"
ACTIVATION_CODE = "activation-code"  # written by `nsg activate`
MAX_REDIRECTS = 4


@dataclass(frozen=True)
class Server:
    url: str  # https://host[:port]
    trust_anchors: tuple[x509.Certificate, ...] = ()  # empty: an untrusted bootstrap server
    source: str = "?"


@dataclass(frozen=True)
class Onboarding:
    """nsg's onboarding document, carried as the signed 'configuration' of onboarding-information."""

    channel_url: str
    est_url: str
    trust_anchor_pem: str
    config: dict | None = None  # the gateway's initial config (validated by the daemon before use)

    @classmethod
    def parse(cls, data: bytes | None) -> Onboarding:
        def bad(why: str) -> RemoteBootstrapError:
            return RemoteBootstrapError(f"onboarding configuration: {why}", reason=Reason.MALFORMED_CONVEYED)

        try:
            doc = json.loads(data or b"")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad("not JSON") from None
        if not isinstance(doc, dict) or not {"channel_url", "est_url", "trust_anchor"} <= set(doc) <= {
                "channel_url", "est_url", "trust_anchor", "config"}:
            raise bad("must hold channel_url, est_url, trust_anchor and optionally config")
        if "config" in doc and not isinstance(doc["config"], dict):
            raise bad("config must be an object")
        for k, scheme in (("channel_url", "wss"), ("est_url", "https")):
            u = urlsplit(str(doc[k]))
            if u.scheme != scheme or not u.hostname:
                raise bad(f"{k} must be a {scheme}:// URL with a host")
        try:
            x509.load_pem_x509_certificates(str(doc["trust_anchor"]).encode())
        except ValueError:
            raise bad("trust_anchor is not PEM certificates") from None
        return cls(doc["channel_url"], doc["est_url"], doc["trust_anchor"], doc.get("config"))


@dataclass
class Bootstrapper:
    identity: FileIdentityStore
    hw_model: str = "nsg-x86"
    os_name: str = "nsg"
    os_version: str = "0.1.0"
    activation_code: Callable[[], str | None] | None = None  # default: STATE/identity/activation-code
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
    est_max_pending: int = 5  # Retry-After rounds (activation required, RFC 7030 4.2.3) before giving up

    def code(self) -> str | None:
        if self.activation_code is not None:
            return self.activation_code()
        path = self.identity.directory / ACTIVATION_CODE
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def done(self) -> Onboarding | None:
        path = self.identity.directory / ONBOARDING
        if not path.exists() or self.identity.ldevid() is None:
            return None
        return Onboarding.parse(path.read_bytes())

    def _tls(self, server: Server) -> ssl.SSLContext:
        d = self.identity.directory
        if not server.trust_anchors:
            return sztp.untrusted_tls_context(str(d / "idevid.pem"), str(d / "idevid.key"))
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in server.trust_anchors)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=pem.decode())
        ctx.load_cert_chain(str(d / "idevid.pem"), str(d / "idevid.key"))
        return ctx

    async def run(self, servers: list[Server]) -> Onboarding:
        """Try servers in order until one onboards us; every failure is logged and the next is tried."""
        queue = list(servers)
        redirects = 0
        failures: list[str] = []
        while queue:
            server = queue.pop(0)
            try:
                info = await self._ask(server)
            except BootstrapError as exc:
                failures.append(f"{server.url}: {exc}")
                log.warning("bootstrap server refused", extra={"fields": {"url": server.url, "error": str(exc),
                                                                          "source": server.source}})
                continue
            if isinstance(info, sztp_data.RedirectInfo):
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    failures.append(f"{server.url}: too many redirects")
                    continue
                queue[:0] = [self._from_redirect(s) for s in info.servers]
                continue
            try:
                return await self._onboard(server, info)
            except BootstrapError as exc:
                failures.append(f"{server.url}: {exc}")
                await self._report(server, "bootstrap-error", str(exc))
        raise LocalBootstrapError("no bootstrap server onboarded us: " + "; ".join(failures))

    def _from_redirect(self, s: sztp_data.BootstrapServer) -> Server:
        anchors: tuple[x509.Certificate, ...] = ()
        if s.trust_anchor:  # a certs-only CMS (RFC 8572, redirect-information trust-anchor)
            anchors = tuple(cms.parse_certs_only(s.trust_anchor))
        host = f"[{s.address}]" if ":" in s.address else s.address
        return Server(f"https://{host}:{s.port or 443}", anchors, "redirect")

    async def _ask(self, server: Server) -> sztp_data.ConveyedInfo:
        trusted = bool(server.trust_anchors)
        await self._report(server, "bootstrap-initiated")
        nonce = secrets.token_bytes(16)
        out = await sztp.get_bootstrapping_data(server.url, self._tls(server), nonce=nonce,
                                                signed_data_preferred=not trusted, hw_model=self.hw_model,
                                                os_name=self.os_name, os_version=self.os_version)
        await self._report(server, "parsing-initiated")
        if out.signed:
            assert out.owner_certificate is not None and out.ownership_voucher is not None
            anchor = x509.load_pem_x509_certificate((self.identity.directory / "manufacturer-ca.pem").read_bytes())
            try:
                info = sztp_data.verify_bootstrapping_data(out.conveyed_information, out.owner_certificate,
                                                           out.ownership_voucher, anchor, self.identity.serial(),
                                                           nonce, self.clock())
            except BootstrapError as exc:
                await self._report(server, "parsing-error", str(exc))
                raise
        elif not trusted:
            raise RemoteBootstrapError("unsigned data from a server we do not trust", reason=Reason.UNSIGNED)
        else:
            info = sztp_data.decode_unsigned_conveyed(out.conveyed_information)
        await self._report(server, "parsing-complete")
        return info

    async def _onboard(self, server: Server, info: sztp_data.OnboardingInfo) -> Onboarding:
        await self._report(server, "onboarding-initiated")
        doc = Onboarding.parse(info.configuration)
        anchors = x509.load_pem_x509_certificates(doc.trust_anchor_pem.encode())
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=doc.trust_anchor_pem)
        d = self.identity.directory
        ctx.load_cert_chain(str(d / "idevid.pem"), str(d / "idevid.key"))
        key = est.new_key()
        code = self.code()
        basic = (self.identity.serial(), code) if code else None
        try:
            cert = await est.simple_enroll(doc.est_url, key, self.identity.serial(), ssl_context=ctx, basic=basic,
                                           issuers=tuple(anchors), max_pending=self.est_max_pending)
        except est.EstError as exc:
            if exc.status == 202:
                raise LocalBootstrapError("activation required: the controller waits for this gateway's "
                                          "activation code (`nsg activate CODE`)") from None
            raise RemoteBootstrapError(f"EST enrollment: {exc}", reason=Reason.TRANSPORT) from None
        await self._report(server, "config-initiated")
        self.identity.store_ldevid(cert, key)
        (d / "controller-ca.pem").write_text(doc.trust_anchor_pem)
        tmp = d / (ONBOARDING + ".tmp")
        write_private(tmp, json.dumps({"channel_url": doc.channel_url, "est_url": doc.est_url,
                                       "trust_anchor": doc.trust_anchor_pem,
                                       **({"config": doc.config} if doc.config else {})}).encode())
        os.replace(tmp, d / ONBOARDING)
        await self._report(server, "config-complete")
        await self._report(server, "bootstrap-complete")
        log.info("bootstrapped", extra={"fields": {"serial": self.identity.serial(), "controller": doc.channel_url}})
        return doc

    async def _report(self, server: Server, kind: str, message: str = "") -> None:
        if not server.trust_anchors:
            return  # never to an untrusted server (RFC 8572 5.3)
        try:
            await sztp.report_progress(server.url, self._tls(server), kind, message)
        except (BootstrapError, ValueError) as exc:
            log.warning("progress report failed", extra={"fields": {"url": server.url, "error": str(exc)}})


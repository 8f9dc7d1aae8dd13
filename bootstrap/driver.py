"""Zero-touch bootstrap, start to finish (RFC 8572 section 5): from a list of bootstrap servers to a
device that holds an LDevID and knows its controller.

    servers (discovery order) --get-bootstrapping-data--> redirect-information: servers in front
                                                      \\-> onboarding-information: nsg onboarding doc
    onboarding doc --> EST simpleenroll (RFC 7030) --> LDevID + controller trust anchor on disk

Trust, per server (RFC 8572 sections 2.1, 5.3, 5.5):

- a server is *trusted* when TLS authenticates it: with the trust anchors it came with (from
  discovery, or from trusted redirect information -- then they are mandatory), or, if it came with
  none, with the box's own trust anchors for bootstrap servers (section 5.1 item 4);
- otherwise the device connects provisionally, sends signed-data-preferred and believes only data
  signed through the ownership voucher, or unsigned redirect information -- which is untrusted, so
  the trust anchors in it are discarded and the servers it names face the same test;
- redirect information is trusted when it came from a trusted server or was signed.

What each server hears is decided by bootstrap/fsm.py: progress reports only to trusted servers,
none about redirect information, and only the required ones at reporting-level "minimal".

Once bootstrapped (``onboarding.json`` exists) the device does not run SZTP again.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from bootstrap import cms, est, fsm, sztp, sztp_data
from bootstrap.errors import ActivationRequired, BootstrapError, LocalBootstrapError, Reason, RemoteBootstrapError
from bootstrap.identity import FileIdentityStore, write_private

log = logging.getLogger("bootstrap")

ONBOARDING = "onboarding.json"
ACTIVATION_CODE = "activation-code"  # written by `nsg activate`
# The box's own trust anchors for bootstrap servers (RFC 8572 section 5.1, item 4), PEM, put there by
# the factory or the image build; optional.
BOOTSTRAP_ANCHORS = "bootstrap-anchors.pem"
UNTRUSTED_REDIRECT = "untrusted-redirect"  # Server.source of servers named by untrusted redirect information
MAX_REDIRECTS = 4


@dataclass(frozen=True)
class Server:
    url: str  # https://host[:port]
    # To authenticate it with; empty: with the box's own anchors, else a provisional connection.
    trust_anchors: tuple[x509.Certificate, ...] = ()
    source: str = "?"


@dataclass
class _Session:
    """One get-bootstrapping-data exchange: the server, the TLS context that reached it, and the
    progress machine that knows what this server may hear."""

    server: Server
    tls: ssl.SSLContext
    progress: fsm.ProgressMachine


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
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the Retry-After waits
    # The box's own trust anchors for bootstrap servers (RFC 8572 5.1 item 4), with those in
    # STATE/identity/bootstrap-anchors.pem.
    bootstrap_anchors: tuple[x509.Certificate, ...] = ()

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

    def _box_anchors(self) -> tuple[x509.Certificate, ...]:
        path = self.identity.directory / BOOTSTRAP_ANCHORS
        try:
            return self.bootstrap_anchors + tuple(x509.load_pem_x509_certificates(path.read_bytes()))
        except FileNotFoundError:
            return self.bootstrap_anchors
        except ValueError as exc:
            raise LocalBootstrapError(f"{path}: not PEM certificates ({exc})") from None

    def _context(self, anchors: tuple[x509.Certificate, ...]) -> ssl.SSLContext:
        d = self.identity.directory
        cert, key = str(d / "idevid.pem"), str(d / "idevid.key")
        return sztp.trusted_tls_context(anchors, cert, key) if anchors else sztp.untrusted_tls_context(cert, key)

    async def run(self, servers: list[Server]) -> Onboarding:
        """Try servers in order until one onboards us; every failure is logged and the next is tried."""
        queue = list(servers)
        redirects = 0
        failures: list[str] = []
        activation = False
        while queue:
            server = queue.pop(0)
            session: _Session | None = None
            try:
                session, info, believed = await self._ask(server)
                if isinstance(info, sztp_data.RedirectInfo):
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise RemoteBootstrapError(f"more than {MAX_REDIRECTS} redirects",
                                                   reason=Reason.TOO_MANY_REDIRECTS)
                    queue[:0] = [self._from_redirect(s, believed) for s in info.servers]
                    continue
                return await self._onboard(session, info)
            except BootstrapError as exc:
                failures.append(f"{server.url}: {exc}")
                activation = activation or isinstance(exc, ActivationRequired)
                log.warning("bootstrap server refused", extra={"fields": {"url": server.url, "error": str(exc),
                                                                          "source": server.source}})
                if session is not None and not session.progress.finished:
                    await self._emit(session, fsm.Abandoned(str(exc)))
        summary = "no bootstrap server onboarded us: " + "; ".join(failures)
        raise ActivationRequired(summary) if activation else LocalBootstrapError(summary)

    def _from_redirect(self, s: sztp_data.BootstrapServer, believed: bool) -> Server:
        anchors: tuple[x509.Certificate, ...] = ()
        host = f"[{s.address}]" if ":" in s.address else s.address
        url = f"https://{host}:{s.port or 443}"
        if s.trust_anchor and believed:  # a certs-only CMS (RFC 8572 section 6.3, trust-anchor)
            anchors = tuple(cms.parse_certs_only(s.trust_anchor))
        elif s.trust_anchor:
            log.info("trust anchor of untrusted redirect information discarded (RFC 8572 section 2.1)",
                     extra={"fields": {"url": url}})
        return Server(url, anchors, "redirect" if believed else UNTRUSTED_REDIRECT)

    async def _ask(self, server: Server) -> tuple[_Session, sztp_data.ConveyedInfo, bool]:
        """get-bootstrapping-data, and what the answer is worth: (session, conveyed information,
        whether it is believed -- from a trusted server, or signed)."""
        nonce = secrets.token_bytes(16)
        anchors = server.trust_anchors or self._box_anchors()
        if anchors:
            session = _Session(server, self._context(anchors), fsm.ProgressMachine(trusted=True))
            try:
                out = await self._get(session, nonce)
            except RemoteBootstrapError as exc:
                if exc.reason is not Reason.SERVER_NOT_AUTHENTICATED or server.trust_anchors:
                    raise  # anchors that came with the server must authenticate it (RFC 8572 5.5)
                log.info("no trust anchor of this box authenticates the server; connecting provisionally "
                         "(RFC 8572 section 5.3)", extra={"fields": {"url": server.url}})
                anchors = ()
        if not anchors:
            session = _Session(server, self._context(()), fsm.ProgressMachine(trusted=False))
            out = await self._get(session, nonce)
        try:
            info, believed = self._understand(session, out, nonce)
        except BootstrapError as exc:
            await self._emit(session, fsm.AnswerRejected(str(exc)))
            raise
        # RFC 8572 7.3: bootstrap-initiated "indicates that the device just used the get-bootstrapping-data RPC"
        redirect = isinstance(info, sztp_data.RedirectInfo)
        await self._emit(session, fsm.GotRedirect() if redirect else fsm.GotOnboarding(out.reporting_level))
        return session, info, believed

    async def _get(self, session: _Session, nonce: bytes) -> sztp.Output:
        try:
            return await sztp.get_bootstrapping_data(
                session.server.url, session.tls, nonce=nonce, signed_data_preferred=not session.progress.trusted,
                hw_model=self.hw_model, os_name=self.os_name, os_version=self.os_version,
                client_certificate=self.identity.idevid())
        except RemoteBootstrapError as exc:
            if exc.reason is Reason.MALFORMED_RESPONSE:
                await self._emit(session, fsm.AnswerRejected(str(exc)))
            raise

    def _understand(self, session: _Session, out: sztp.Output, nonce: bytes
                    ) -> tuple[sztp_data.ConveyedInfo, bool]:
        if out.signed:  # RFC 8572 5.4, whoever the server is
            assert out.owner_certificate is not None and out.ownership_voucher is not None
            anchor = x509.load_pem_x509_certificate((self.identity.directory / "manufacturer-ca.pem").read_bytes())
            return sztp_data.verify_bootstrapping_data(out.conveyed_information, out.owner_certificate,
                                                       out.ownership_voucher, anchor, self.identity.serial(),
                                                       nonce, self.clock()), True
        info = sztp_data.decode_unsigned_conveyed(out.conveyed_information)
        if session.progress.trusted:
            return info, True
        if isinstance(info, sztp_data.RedirectInfo):
            # Allowed in answer to signed-data-preferred (RFC 8572 7.3); untrusted, so followed with
            # its trust anchors discarded (section 2.1).
            return info, False
        why = ""
        if session.server.source == UNTRUSTED_REDIRECT:
            why = (" (it was named by unsigned redirect information from an untrusted server, whose trust anchors "
                   "are discarded: RFC 8572 section 2.1)")
        raise RemoteBootstrapError(f"unsigned onboarding information from a server that could not be authenticated"
                                   f"{why}; RFC 8572 section 5.3 accepts only signed data from such a server",
                                   reason=Reason.UNSIGNED)

    async def _onboard(self, session: _Session, info: sztp_data.OnboardingInfo) -> Onboarding:
        await self._emit(session, fsm.ParsingStarted())
        try:
            doc = Onboarding.parse(info.configuration)
        except BootstrapError as exc:
            await self._emit(session, fsm.ParsingFailed(str(exc)))
            raise
        await self._emit(session, fsm.ParsingDone())
        await self._emit(session, fsm.ConfigStarted())
        try:
            await self._commit(session, doc)
        except BootstrapError as exc:
            await self._emit(session, fsm.ConfigFailed(str(exc)))
            raise
        await self._emit(session, fsm.ConfigDone())
        log.info("bootstrapped", extra={"fields": {"serial": self.identity.serial(), "controller": doc.channel_url}})
        return doc

    async def _commit(self, session: _Session, doc: Onboarding) -> None:
        """Commit nsg's onboarding document: enroll for the LDevID (EST, RFC 7030), keep it, the
        controller's trust anchor and the document."""
        anchors = x509.load_pem_x509_certificates(doc.trust_anchor_pem.encode())
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=doc.trust_anchor_pem)
        d = self.identity.directory
        ctx.load_cert_chain(str(d / "idevid.pem"), str(d / "idevid.key"))
        key = est.new_key()
        code = self.code()
        basic = (self.identity.serial(), code) if code else None
        waited = False

        async def wait(seconds: float) -> None:  # only ever called after a 202 (RFC 7030 4.2.3)
            nonlocal waited
            if not waited:
                waited = True
                await self._emit(session, fsm.Waiting(
                    f"enrollment at {doc.est_url} pending (HTTP 202, RFC 7030 section 4.2.3): the controller waits "
                    f"for this gateway's activation code (`nsg activate CODE`); asking again in {seconds:.0f} s"))
            await self.sleep(seconds)

        try:
            cert = await est.simple_enroll(doc.est_url, key, self.identity.serial(), ssl_context=ctx, basic=basic,
                                           issuers=tuple(anchors), max_pending=self.est_max_pending, sleep=wait)
        except est.EstError as exc:
            if exc.status == 202:
                raise ActivationRequired("activation required: the controller waits for this gateway's "
                                         "activation code (`nsg activate CODE`)") from None
            raise RemoteBootstrapError(f"EST enrollment: {exc}", reason=Reason.TRANSPORT) from None
        try:
            self.identity.store_ldevid(cert, key)
            (d / "controller-ca.pem").write_text(doc.trust_anchor_pem)
            tmp = d / (ONBOARDING + ".tmp")
            write_private(tmp, json.dumps({"channel_url": doc.channel_url, "est_url": doc.est_url,
                                           "trust_anchor": doc.trust_anchor_pem,
                                           **({"config": doc.config} if doc.config else {})}).encode())
            os.replace(tmp, d / ONBOARDING)
        except OSError as exc:
            raise LocalBootstrapError(f"storing the LDevID and onboarding document in {d}: {exc}") from None

    async def _emit(self, session: _Session, event: fsm.Event) -> None:
        """Send the reports ``event`` calls for (none to untrusted servers, see bootstrap/fsm.py)."""
        for report in session.progress.handle(event):
            try:
                await sztp.report_progress(session.server.url, session.tls, report.progress, report.message,
                                           client_certificate=self.identity.idevid())
            except BootstrapError as exc:
                log.warning("progress report failed", extra={"fields": {"url": session.server.url,
                                                                        "type": report.progress, "error": str(exc)}})

"""Zero-touch bootstrap, start to finish (RFC 8572 section 5): from a list of bootstrap servers to a
device that holds an LDevID and knows its controller.

    servers (discovery order) --get-bootstrapping-data--> redirect-information: servers in front
                                                      \\-> onboarding-information: nsg onboarding doc
    onboarding doc --> EST simpleenroll (RFC 7030) --> LDevID + controller trust anchor on disk

This is the I/O of it: TLS contexts, get-bootstrapping-data and report-progress (bootstrap/sztp.py),
verifying signed data (bootstrap/sztp_data.py), EST, files, logs. Which server comes next, which trust
anchors it is tried with, whether its answer is believed and how the run ends are decided by
bootstrap/sequence.py; what each server hears about our progress by bootstrap/fsm.py.

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

from bootstrap import est, fsm, sequence, sztp, sztp_data
from bootstrap.errors import ActivationRequired, BootstrapError, LocalBootstrapError, Reason, RemoteBootstrapError
from bootstrap.identity import FileIdentityStore, write_private
from bootstrap.sequence import Server

log = logging.getLogger("bootstrap")

ONBOARDING = "onboarding.json"
ACTIVATION_CODE = "activation-code"  # written by `nsg activate`
# The box's own trust anchors for bootstrap servers (RFC 8572 section 5.1, item 4), PEM, put there by
# the factory or the image build; optional.
BOOTSTRAP_ANCHORS = "bootstrap-anchors.pem"


@dataclass
class _Link:
    """The server asked last: where its progress reports go, and the nonce of its request."""

    url: str = ""
    tls: ssl.SSLContext | None = None
    nonce: bytes = b""


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
        machine = sequence.SequenceMachine()
        link = _Link()
        actions = machine.handle(sequence.Start(tuple(servers)))
        while True:
            event: sequence.Event | None = None
            for action in actions:
                if isinstance(action, sequence.Finished):
                    doc = action.document
                    assert isinstance(doc, Onboarding)
                    log.info("bootstrapped", extra={"fields": {"serial": self.identity.serial(),
                                                               "controller": doc.channel_url}})
                    return doc
                if isinstance(action, sequence.GaveUp):
                    raise action.error
                event = await self._perform(machine, link, action) or event
            if event is None:
                raise LocalBootstrapError(f"sequence: no next step after {actions}")
            actions = machine.handle(event)

    async def _perform(self, machine: sequence.SequenceMachine, link: _Link, action: sequence.Action
                       ) -> sequence.Event | None:
        """Do what ``action`` asks; what came of it, if the machine waits for that."""
        match action:
            case fsm.Report():
                await self._report(link, action)
            case sequence.Note(url=url, text=text):
                log.info(text, extra={"fields": {"url": url}})
            case sequence.Refused(server=server, error=exc):
                log.warning("bootstrap server refused", extra={"fields": {"url": server.url, "error": str(exc),
                                                                          "source": server.source}})
            case sequence.LoadBoxAnchors():
                try:
                    return sequence.BoxAnchors(self._box_anchors())
                except BootstrapError as exc:
                    return sequence.Failed(exc)
            case sequence.Ask():
                return await self._ask(link, action)
            case sequence.Parse(configuration=configuration):
                try:
                    return sequence.Parsed(Onboarding.parse(configuration))
                except BootstrapError as exc:
                    return sequence.Failed(exc)
            case sequence.Commit(document=doc):
                assert isinstance(doc, Onboarding)
                try:
                    await self._commit(machine, link, doc)
                except BootstrapError as exc:
                    return sequence.Failed(exc)
                return sequence.Committed()
        return None

    async def _ask(self, link: _Link, ask: sequence.Ask) -> sequence.Event:
        """get-bootstrapping-data, and the answer verified (if signed) or decoded."""
        if not ask.fallback:  # the provisional retry is the same request
            link.nonce = secrets.token_bytes(16)
        link.url, link.tls = ask.server.url, self._context(ask.anchors)
        try:
            out = await sztp.get_bootstrapping_data(
                ask.server.url, link.tls, nonce=link.nonce, signed_data_preferred=not ask.anchors,
                hw_model=self.hw_model, os_name=self.os_name, os_version=self.os_version,
                client_certificate=self.identity.idevid())
        except BootstrapError as exc:
            return sequence.Failed(exc)
        try:
            return sequence.Answer(self._understand(out, link.nonce), out.signed, out.reporting_level)
        except BootstrapError as exc:
            return sequence.Rejected(exc)

    def _understand(self, out: sztp.Output, nonce: bytes) -> sztp_data.ConveyedInfo:
        if out.signed:  # RFC 8572 5.4, whoever the server is
            assert out.owner_certificate is not None and out.ownership_voucher is not None
            anchor = x509.load_pem_x509_certificate((self.identity.directory / "manufacturer-ca.pem").read_bytes())
            return sztp_data.verify_bootstrapping_data(out.conveyed_information, out.owner_certificate,
                                                       out.ownership_voucher, anchor, self.identity.serial(),
                                                       nonce, self.clock())
        return sztp_data.decode_unsigned_conveyed(out.conveyed_information)

    async def _commit(self, machine: sequence.SequenceMachine, link: _Link, doc: Onboarding) -> None:
        """Commit nsg's onboarding document: enroll for the LDevID (EST, RFC 7030), keep it, the
        controller's trust anchor and the document."""
        anchors = x509.load_pem_x509_certificates(doc.trust_anchor_pem.encode())
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=doc.trust_anchor_pem)
        d = self.identity.directory
        ctx.load_cert_chain(str(d / "idevid.pem"), str(d / "idevid.key"))
        key = est.new_key()
        code = self.code()
        basic = (self.identity.serial(), code) if code else None

        async def wait(seconds: float) -> None:  # only ever called after a 202 (RFC 7030 4.2.3)
            for action in machine.handle(sequence.Pending(
                    f"enrollment at {doc.est_url} pending (HTTP 202, RFC 7030 section 4.2.3): the controller waits "
                    f"for this gateway's activation code (`nsg activate CODE`); asking again in {seconds:.0f} s")):
                await self._perform(machine, link, action)
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

    async def _report(self, link: _Link, report: fsm.Report) -> None:
        """report-progress to the server asked last (the machines only let trusted servers hear any)."""
        assert link.tls is not None
        try:
            await sztp.report_progress(link.url, link.tls, report.progress, report.message,
                                       client_certificate=self.identity.idevid())
        except BootstrapError as exc:
            log.warning("progress report failed", extra={"fields": {"url": link.url, "type": report.progress,
                                                                    "error": str(exc)}})

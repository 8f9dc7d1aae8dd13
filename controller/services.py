"""The controller's device-facing services on one TLS site: SZTP bootstrap (RFC 8572), EST
(RFC 7030) and the management channel — composed over the store.

    https://ADDR:PORT/restconf/...          SZTP: IDevID clients, signed onboarding data
    https://ADDR:PORT/.well-known/est/...   EST: IDevID (enroll) / LDevID (reenroll) clients
    wss://ADDR:PORT/channel                 the channel: LDevID clients
    https://ADDR:PORT/images/SHA256         app image tarballs: LDevID clients whose apps run that image
    https://ADDR:PORT/bundles/SHA256        upgrade bundles: LDevID clients of the enterprise that uploaded it

The site's certificate is issued by the controller CA for ADDR; that CA is the trust anchor the
onboarding data gives gateways. Admin API tokens never work here, device certificates never work
on the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bootstrap import cms
from bootstrap.identity import make_manufacturer_ca, write_private
from controller.activation import ActivationGate
from controller.bundle_store import bundle_path
from controller.ca import CertificateAuthority, subject_serial
from controller.channel_server import ChannelHub, ChannelLimits
from controller.est_server import (
    OP_SIMPLEENROLL,
    DeviceAuthorizer,
    EstDenied,
    HandshakeRefusals,
    TlsSite,
    add_est_routes,
    peer_certificate,
    server_ssl_context,
)
from controller.image_store import image_path
from controller.mesh import render
from controller.safe_text import safe
from controller.security_events import SecurityEvents
from controller.site_guard import SiteGuard, SiteLimits
from controller.store import Store
from controller.sztp_server import Manufacturer, Owner, SztpServer
from nsg.model import GatewayConfig
from nsg.model.config import config_document

log = logging.getLogger("controller.services")

RENDERED_KEPT = 8  # enterprises whose rendered configs are kept (per generation) for the channel's pushes


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, ip: str | None = None,
           days: int = 3650) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg controller"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _load_or_make(directory: Path, stem: str, make) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    kp, cp = directory / f"{stem}.key", directory / f"{stem}.pem"
    if kp.exists() and cp.exists():
        key = serialization.load_pem_private_key(kp.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cp.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make(key)
    write_private(kp, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


@dataclass
class DeviceServices:
    store: Store
    state_dir: Path
    address: str  # where gateways reach us (certificate SAN, onboarding URLs)
    port: int
    manufacturer_dir: Path  # lab: the manufacturer CA whose key issues vouchers and whose IDevIDs we accept
    site_limits: SiteLimits = field(default_factory=SiteLimits)  # what one client may hold of the site
    channel_limits: ChannelLimits = field(default_factory=ChannelLimits)  # ... and of the channel
    push_every: float = 0.5  # how often configs are compared with the store's generations

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca = CertificateAuthority.load_or_create(self.state_dir / "ca")
        pki = self.state_dir / "pki"
        pki.mkdir(exist_ok=True, mode=0o700)
        okey, oca = _load_or_make(pki, "owner-ca", lambda k: _issue("owner CA", k, None, k, ca=True))
        owner_key, owner = _load_or_make(pki, "owner", lambda k: _issue("owner", k, oca, okey, ca=False))
        _load_or_make(pki, f"tls-{self.address}",
                      lambda k: _issue(self.address, k, self.ca.cert, self.ca.key, ca=False, ip=self.address,
                                       days=825))
        mkey, mcert = make_manufacturer_ca(self.manufacturer_dir)
        self.gate = ActivationGate(self.store)
        self.store.certificates.crl_signer = self.ca.crl
        self.store.certificates.refresh_crl()  # what was revoked while no signer was there (a CLI on the database)
        self.security = SecurityEvents()
        self._rendered: dict[tuple[str, int], dict[str, GatewayConfig]] = {}
        self.hub = ChannelHub(self._config_doc, accept=self._current_ldevid, generation=self._generation_of,
                              limits=self.channel_limits, security=self.security)
        self.sztp = SztpServer(Owner(owner_key, owner, oca), Manufacturer(mkey, mcert), self._onboarding, (mcert,),
                               enrolled=self.store.certificates.holds_identity)
        self.guard = SiteGuard(self.site_limits)
        self._tls = (pki / f"tls-{self.address}.pem", pki / f"tls-{self.address}.key")
        self._client_cas = [mcert, self.ca.cert]
        self._authorizer = DeviceAuthorizer(self.ca, [mcert], self.gate.lookup,
                                            revoked=self.store.certificates.is_revoked)
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task | None = None
        self.images_dir = self.state_dir / "images"
        self.images_dir.mkdir(exist_ok=True, mode=0o700)
        self.bundles_dir = self.state_dir / "bundles"
        self.bundles_dir.mkdir(exist_ok=True, mode=0o700)
        self.counters = {"image_downloads": 0, "image_refused": 0, "bundle_downloads": 0, "bundle_refused": 0}
        # failed TLS handshakes on this site; refused client certificates also by subject (tls_refusals)
        self.tls_counters = {"client_cert_refused": 0, "handshake_failed": 0}
        self.tls_refusals = HandshakeRefusals()

    def _current_ldevid(self, cert: x509.Certificate) -> bool:
        """An LDevID of our CA, valid now and not revoked (the channel, images)."""
        return self.ca.issued(cert) and not self.store.certificates.is_revoked(cert.serial_number)

    def _issued(self, device_serial: str, cert: x509.Certificate, operation: str) -> None:
        """On record before it is sent. A first enrollment is recorded only while the box holds no valid
        LDevID, in the same transaction as that check: two enrollments at once yield one identity."""
        first = operation == OP_SIMPLEENROLL
        if not self.store.certificates.record_issued(device_serial, cert.serial_number, cert.not_valid_after_utc,
                                                     first=first):
            raise EstDenied(403, self.gate.identity_held(device_serial))

    def _handshake_failed(self, exc: BaseException, subject: str | None, peer: str) -> None:
        """A TLS handshake on the device site failed; the client got the alert. A client certificate we
        refused (not one of our manufacturers' or our CA's, expired, ...) is counted and logged."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.tls_counters["client_cert_refused"] += 1
            self.tls_refusals.refused(subject, exc.verify_message or str(exc), peer)
        else:
            self.tls_counters["handshake_failed"] += 1
            log.debug("TLS handshake failed", extra={"fields": {"peer": peer, "error": str(exc)}})

    @property
    def base_url(self) -> str:
        return f"https://{self.address}:{self.port}"

    def _onboarding(self, serial: str) -> dict | None:
        """nsg's onboarding document: where EST and the channel are, the CA to trust for them, and the
        gateway's initial config (it starts forwarding before the channel is even up)."""
        rec = self.store.gateways.by_serial(serial)
        if rec is None:
            return None
        return {"channel_url": f"wss://{self.address}:{self.port}/channel", "est_url": self.base_url,
                "trust_anchor": self.ca.cert_pem.decode(),
                "config": config_document(self.store.documents.config_for(rec.name))}

    def _generation_of(self, serial: str) -> int | None:
        """The generation the controller has for a gateway, without rendering anything (pushes ask often)."""
        rec = self.store.gateways.by_serial(serial)
        return None if rec is None else self.store.enterprises.get(rec.enterprise).generation

    def _config_doc(self, serial: str) -> tuple[int, dict] | None:
        """A gateway's config for the channel. An enterprise is rendered once per generation, not once per
        gateway (a render is the whole mesh: 0.2 s for 100 gateways)."""
        rec = self.store.gateways.by_serial(serial)
        if rec is None:
            return None
        key = (rec.enterprise, self.store.enterprises.get(rec.enterprise).generation)
        configs = self._rendered.get(key)
        if configs is None:
            model = self.store.documents.enterprise_model(rec.enterprise)
            configs = render(model)
            key = (rec.enterprise, model.generation)  # what was read: a write in between makes a newer one
            for old in [k for k in self._rendered if k[0] == rec.enterprise]:
                del self._rendered[old]
            while len(self._rendered) >= RENDERED_KEPT:
                del self._rendered[next(iter(self._rendered))]
            self._rendered[key] = configs
        cfg = configs.get(rec.name)
        if cfg is None:  # renamed or moved meanwhile: render it alone
            cfg = self.store.documents.config_for(rec.name)
        return cfg.generation, config_document(cfg)

    async def _image(self, request: web.Request) -> web.StreamResponse:
        """An app image tarball, to a gateway holding a current LDevID from our CA whose config runs it
        (a gateway of one enterprise never gets another's images)."""
        sha = request.match_info["sha256"]
        cert = peer_certificate(request)
        if cert is None or not self._current_ldevid(cert):
            self.counters["image_refused"] += 1
            raise web.HTTPUnauthorized(text="an LDevID client certificate from this controller is needed")
        serial = subject_serial(cert.subject)
        if serial is None or not self.store.workloads.may_fetch(serial, sha):
            self.counters["image_refused"] += 1
            log.warning("image refused", extra={"fields": {"serial": safe(serial, 80), "sha256": sha}})
            raise web.HTTPForbidden(text="no app of this gateway runs that image")
        path = image_path(self.images_dir, sha)
        if not path.is_file():
            raise web.HTTPNotFound(text="the controller has lost that image; upload it again")
        self.counters["image_downloads"] += 1
        log.info("image download", extra={"fields": {"serial": safe(serial, 80), "sha256": sha}})
        return web.FileResponse(path, headers={"Content-Type": "application/x-tar"})

    async def _bundle(self, request: web.Request) -> web.StreamResponse:
        """An upgrade bundle, to a gateway holding a current LDevID from our CA whose enterprise uploaded it
        (403 alike for a bundle of another enterprise and one that does not exist)."""
        sha = request.match_info["sha256"]
        cert = peer_certificate(request)
        if cert is None or not self._current_ldevid(cert):
            self.counters["bundle_refused"] += 1
            raise web.HTTPUnauthorized(text="an LDevID client certificate from this controller is needed")
        serial = subject_serial(cert.subject)
        if serial is None or not self.store.upgrades.may_fetch(serial, sha):
            self.counters["bundle_refused"] += 1
            log.warning("bundle refused", extra={"fields": {"serial": safe(serial, 80), "sha256": sha}})
            raise web.HTTPForbidden(text="no bundle of this gateway's enterprise has that hash")
        path = bundle_path(self.bundles_dir, sha)
        if not path.is_file():
            raise web.HTTPNotFound(text="the controller has lost that bundle; upload it again")
        self.counters["bundle_downloads"] += 1
        log.info("bundle download", extra={"fields": {"serial": safe(serial, 80), "sha256": sha}})
        return web.FileResponse(path, headers={"Content-Type": "application/x-tar"})

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self.guard.middleware])
        self.sztp.add_routes(app)
        add_est_routes(app, self.ca, self._authorizer, on_issued=self._issued)
        self.hub.add_routes(app)
        app.router.add_get(r"/images/{sha256:[0-9a-f]{64}}", self._image)
        app.router.add_get(r"/bundles/{sha256:[0-9a-f]{64}}", self._bundle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        ctx = server_ssl_context(self._tls[0], self._tls[1], self._client_cas)
        self.guard.fit_descriptors()
        site = TlsSite(self._runner, self.address, self.port, ctx, self._handshake_failed, self.guard)
        await site.start()
        self.port = site.port
        self.store.workloads.set_device_url(self.base_url)  # image URLs in configs point here
        # Untrusting devices are redirected here, now with our CA as the anchor: onboarding and
        # progress reports then run over authenticated TLS.
        self.sztp.redirect = (self.address, self.port, cms.certs_only([self.ca.cert]))
        self._pusher = asyncio.get_running_loop().create_task(self._push_loop())
        log.info("device services up", extra={"fields": {"url": self.base_url}})

    async def _push_loop(self) -> None:
        """Configs follow the store: whenever a gateway's generation moved, it gets the new one. A push only
        queues the config in that gateway's session (which sends it by itself), so no gateway waits for
        another; a gateway whose config cannot be rendered is logged and skipped."""
        while True:
            await asyncio.sleep(self.push_every)
            for serial in list(self.hub.sessions):
                try:
                    self.hub.push_now(serial)
                except Exception:  # a render or store fault for one gateway must not stop the others' pushes
                    log.exception("push failed", extra={"fields": {"serial": safe(serial, 80)}})

    async def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self._runner is not None:
            await self._runner.cleanup()

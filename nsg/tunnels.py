"""Encrypted tunnels of a gateway (transport "esp"): the ESP engine plus IKEv2 toward every peer.

The config says who the peers are; this module turns that into IKE peer policies
and keeps the IKE manager in step with each new config. The engine's TUN device
is what the dataplane routes peer system IPs into.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ipsec.engine import xfrm
from ipsec.engine.installer import SadInstaller
from ipsec.engine.userspace import UserspaceEngine
from ipsec.engine.xfrm_installer import EncapSocket, XfrmInstaller
from ipsec.ike import events as ev
from ipsec.ike.crypto import PrivateKey
from ipsec.ike.driver import IkeDriver
from ipsec.ike.manager import IkeManager
from ipsec.ike.policy import EspProposal, Identity, IkeProposal, PeerPolicy, Timers
from ipsec.sad import Expiry, Lifetime, Sad
from nsg.dataplane.desired import ESP_TUN
from nsg.model import GatewayConfig, Peer
from nsg.model.ipsec import IpsecConfig, parse_esp, parse_ike
from nsg.model.status import ChildSaStatus, IkePeerStatus, TunnelsStatus

log = logging.getLogger("nsg.tunnels")


class TunnelConfigError(ValueError):
    """The IPsec credentials named in the config cannot be used (local fault)."""


LDEVID_FILES = ("ldevid.pem", "ldevid.key", "controller-ca.pem")  # in the identity store (bootstrap/identity.py)


def credential_files(ip: IpsecConfig, identity_dir: Path | None) -> tuple[Path, Path, Path] | None:
    """(certificate, key, CA) files for certificate auth; None with PSKs."""
    if ip.auth == "psk":
        return None
    if ip.auth == "certificate":
        assert ip.cert and ip.key and ip.ca
        return ip.cert, ip.key, ip.ca
    if identity_dir is None:
        raise TunnelConfigError("ipsec auth 'ldevid' needs the box's identity store (a state directory)")
    cert, key, ca = (identity_dir / f for f in LDEVID_FILES)
    return cert, key, ca


@dataclass(frozen=True, eq=False)
class Credentials:
    """What the IKE policies need of a config's ipsec section: our key and certificate, the trust
    anchors and the serial numbers the CRL revokes (empty with PSKs). Loaded once per config and
    LDevID renewal (``epoch``: the daemon's renewal count when loaded) and handed to IKE through the
    desired state; compared by identity, never by key bytes: one load is one object."""

    key: PrivateKey | None = field(default=None, repr=False)
    cert: x509.Certificate | None = None
    cas: tuple[x509.Certificate, ...] = ()
    revoked: frozenset[int] = frozenset()
    epoch: int = 0

    def policy_fields(self) -> dict:
        """PeerPolicy's certificate-auth fields ({} with PSKs)."""
        if self.key is None:
            return {}
        return {"key": self.key, "cert": self.cert, "cas": self.cas, "revoked": self.revoked}


def load_credentials(ip: IpsecConfig, identity_dir: Path | None = None, epoch: int = 0) -> Credentials:
    """Read the credentials ``ip`` names (the CRL checked against the CA: one that does not verify is
    refused). Raises TunnelConfigError naming the file or field; nothing is half-loaded."""
    files = credential_files(ip, identity_dir)
    if files is None:
        return Credentials(epoch=epoch)
    cert_path, key_path, ca_path = files
    try:
        mode = key_path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TunnelConfigError(f"ipsec key {key_path} is readable by others (mode {oct(mode & 0o777)}); use 0600")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cas = tuple(x509.load_pem_x509_certificates(ca_path.read_bytes()))
    except (OSError, ValueError) as exc:
        if isinstance(exc, TunnelConfigError):
            raise
        hint = " (the box has no LDevID yet: it enrolls at bootstrap)" if ip.auth == "ldevid" else ""
        raise TunnelConfigError(f"ipsec credentials: {exc}{hint}") from None
    return Credentials(key, cert, cas, revoked_serials(ip.crl, cas), epoch)  # type: ignore[arg-type]


def revoked_serials(crl_pem: str | None, cas: tuple[x509.Certificate, ...]) -> frozenset[int]:
    """Serial numbers a CRL lists, once its signature verifies with one of ``cas`` (RFC 5280 6.3.3:
    the CRL's issuer is the certificates' issuer). Not checked against nextUpdate: the CRL comes with
    every config from the controller, and an old list still revokes what it lists."""
    if crl_pem is None:
        return frozenset()
    try:
        crl = x509.load_pem_x509_crl(crl_pem.encode())
    except ValueError as exc:
        raise TunnelConfigError(f"ipsec.crl does not parse: {exc}") from None
    issuer = next((ca for ca in cas if ca.subject == crl.issuer), None)
    if issuer is None or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise TunnelConfigError(f"ipsec.crl: not signed by the trust anchor (issuer {crl.issuer.rfc4514_string()})")
    return frozenset(r.serial_number for r in crl)


def peer_policy(cfg: GatewayConfig, peer: Peer, creds: Credentials) -> PeerPolicy:
    ip = cfg.ipsec
    assert ip is not None
    auth: dict = ({"psk": peer.psk.encode()} if ip.auth == "psk" and peer.psk is not None else
                  {**creds.policy_fields(), "remote_serial": peer.serial})
    return PeerPolicy(
        name=peer.name,
        local_id=Identity.address(str(cfg.system_ip)),
        remote_id=Identity.address(str(peer.system_ip)),
        local_ts=IPv4Network(f"{cfg.system_ip}/32"),
        remote_ts=IPv4Network(f"{peer.system_ip}/32"),
        ike=tuple(IkeProposal(*parse_ike(p)) for p in ip.ike_proposals),
        esp=tuple(EspProposal(*parse_esp(p)) for p in ip.esp_proposals),
        timers=Timers(ike_rekey_s=ip.ike_rekey_s, child_rekey_s=ip.child_rekey_s, dpd_s=ip.dpd_s,
                      old_child_linger_s=ip.rekey_overlap_s),
        **auth,
    )


def initiates(cfg: GatewayConfig, peer: Peer) -> bool:
    if peer.initiate != "auto":
        return peer.initiate == "always"
    return cfg.behind_nat or int(cfg.system_ip) < int(peer.system_ip)


class Tunnels:
    """The credentials come with each config (nsg.preflight loaded them when the daemon took it, once
    per config and LDevID renewal): this never reads them itself."""

    def __init__(self) -> None:
        self.sad = Sad()
        self.engine: UserspaceEngine | None = None
        self.driver: IkeDriver | None = None
        self.manager: IkeManager | None = None
        self.kernel_esp = False
        self.backend = "userspace"
        self.installer: SadInstaller | XfrmInstaller = SadInstaller(self.sad)
        self.xfrm: xfrm.XfrmBackend | None = None
        self.encap: EncapSocket | None = None
        self.local_ip = "0.0.0.0"
        self.expired = {"soft": 0, "hard": 0}
        self.on_established: Callable[[str], None] | None = None  # an IKE SA (and its child) is up
        self._soft_done: set[tuple[str, int]] = set()

    def start_engine(self, ip: IpsecConfig, kernel_esp: bool | None = None) -> None:
        """The backend the probe found (``kernel_esp``; probed here if None). Userspace: create the TUN
        first, the dataplane routes into it."""
        self.kernel_esp = xfrm.probe() if kernel_esp is None else kernel_esp
        if self.kernel_esp:
            self.backend = "xfrm"
            self.xfrm = xfrm.XfrmBackend()
            self.installer = XfrmInstaller(self.xfrm, lambda: self.local_ip)
            return
        self.backend = "userspace"
        self.engine = UserspaceEngine(ESP_TUN, self.sad)
        self.engine.open()
        self.engine.add_socket("0.0.0.0")
        self.installer = SadInstaller(self.sad, window=ip.replay_window, lifetime=Lifetime(
            soft_s=ip.child_rekey_s, hard_s=ip.child_rekey_s * 1.25,
            soft_bytes=ip.child_soft_bytes, hard_bytes=ip.child_hard_bytes,
            soft_packets=ip.child_soft_packets, hard_packets=ip.child_hard_packets))
        self.engine.start()

    async def start_ike(self, cfg: GatewayConfig, local_ip: str, creds: Credentials) -> None:
        self.local_ip = local_ip
        self.manager = IkeManager((local_ip, 500))
        nat: UserspaceEngine | EncapSocket
        if self.backend == "xfrm":
            nat = self.encap = EncapSocket(lambda data, addr, _i: self._ike_4500(data, addr))
        else:
            assert self.engine is not None
            nat = self.engine
        self.driver = IkeDriver(self.manager, nat, self.installer, "0.0.0.0")
        self.driver.on_event = self._ike_event
        if self.engine is not None:
            self.engine.on_ike = self.driver.from_engine_thread
        await self.driver.start()
        self.apply(cfg, local_ip, creds)
        if self.backend == "userspace":  # the kernel enforces lifetimes of its own states
            self._lifetimes = asyncio.get_running_loop().create_task(self._watch_lifetimes())

    def _ike_event(self, peer: str, c: object) -> None:
        if isinstance(c, ev.Established) and self.on_established is not None:
            self.on_established(peer)

    def _ike_4500(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.driver is not None:
            self.driver.datagram(data, addr, 4500)

    async def _watch_lifetimes(self, every: float = 1.0) -> None:
        """Soft limit reached: rekey now. Hard limit: the SA goes, whatever IKE is doing."""
        while True:
            await asyncio.sleep(every)
            self.check_lifetimes()

    def check_lifetimes(self) -> None:
        if not isinstance(self.installer, SadInstaller):
            return
        for _direction, spi, state in self.sad.expiries():
            found = self.installer.peer_of(spi)
            if found is None:
                continue
            peer, child = found
            if state is Expiry.HARD:
                self.expired["hard"] += 1
                log.warning("child SA hit its hard lifetime, dropped", extra={"fields": {"peer": peer,
                                                                                       "spi": f"{spi:#010x}"}})
                self.installer.remove(peer, child.child_id, child.in_spi, child.out_spi)
            elif (peer, child.child_id) not in self._soft_done:
                self._soft_done.add((peer, child.child_id))
                self.expired["soft"] += 1
                self.rekey(peer, ike=False)

    def apply(self, cfg: GatewayConfig, local_ip: str, creds: Credentials) -> None:
        """Bring the IKE peerings in line with the config and its loaded credentials (a credential
        change alone keeps the running SAs: ipsec.ike.manager.set_peer)."""
        if self.manager is None or self.driver is None or cfg.ipsec is None:
            return
        policies = [(peer_policy(cfg, p, creds), p) for p in cfg.peers]
        self.manager.local = (local_ip, 500)
        self.local_ip = local_ip
        tagged = []
        for name in set(self.manager.peers) - {p.name for p in cfg.peers}:
            tagged += self.manager.remove_peer(name)
        for pol, peer in policies:
            go = initiates(cfg, peer)
            tagged += self.manager.set_peer(pol, (str(peer.endpoint), 500) if go else None, go)
        self.driver.apply(tagged)

    def rekey(self, peer: str, ike: bool) -> bool:
        if self.manager is None or self.driver is None or peer not in self.manager.peers:
            return False
        self.driver.apply(self.manager.rekey_ike(peer) if ike else self.manager.rekey_child(peer))
        return True

    async def stop(self) -> None:
        task = getattr(self, "_lifetimes", None)
        if task is not None:
            task.cancel()
        if self.manager is not None and self.driver is not None:
            self.driver.apply(self.manager.close_all())
            await asyncio.sleep(0.2)  # let the deletes leave; peers then know at once
            self.driver.close()
        if self.engine is not None:
            self.engine.stop()
        if self.encap is not None:
            self.encap.close()
        if self.xfrm is not None:
            self.xfrm.close()
        self.engine = self.driver = self.manager = None

    def _xfrm_sas(self) -> list[ChildSaStatus]:
        """Our child SAs as the kernel holds them, with the kernel's counters (one dump per status)."""
        try:
            kernel = {(k.dst, k.spi): k for k in self.xfrm.sas()} if self.xfrm is not None else {}
        except (OSError, xfrm.XfrmError, ValueError) as exc:
            log.warning("cannot read the kernel's ESP states: %s", exc)
            kernel = {}
        out = []
        by_dir = {"in": {s: k for (dst, s), k in kernel.items() if dst == self.local_ip},
                  "out": {s: k for (dst, s), k in kernel.items() if dst != self.local_ip}}
        for (peer, _cid), c in self.installer.children.items():
            for d, spi in (("in", c.in_spi), ("out", c.out_spi)):
                k = by_dir[d].get(spi)
                counters = {} if k is None else {"packets": k.packets, "bytes": k.bytes, "replay_drops": k.replay,
                                                 "auth_failures": k.integrity_failed}
                out.append(ChildSaStatus(dir=d, spi=f"{spi:#010x}", peer=peer, **counters))
        return out

    def status(self) -> TunnelsStatus:
        if self.engine is None and self.xfrm is None:
            return TunnelsStatus(backend=None)
        sas = [ChildSaStatus(dir="in", spi=f"{e.sa.spi:#010x}", **e.sa.counters.as_dict())
               for e in self.sad.inbound.values()]
        sas += [ChildSaStatus(dir="out", spi=f"{o.sa.spi:#010x}", endpoint=f"{o.endpoint.host}:{o.endpoint.port}",
                              **o.sa.counters.as_dict()) for o in self.sad.outbound.values()]
        if self.backend == "xfrm":
            sas = self._xfrm_sas()
        return TunnelsStatus(
            backend=self.backend,
            kernel_esp=self.kernel_esp,
            engine=dict(self.engine.counters) if self.engine else
                   dict(getattr(self.encap, "counters", {})) if self.encap else {},
            # the IKE library reports plain dicts (it knows nothing of nsg): validated here
            ike=[IkePeerStatus.model_validate(p) for p in self.manager.status()] if self.manager else [],
            child_sas=sas,
            ike_driver=dict(self.driver.counters) if self.driver else {},
            ike_manager=dict(self.manager.counters) if self.manager else {},
            lifetime_expiries=dict(self.expired),
        )


__all__ = ["Credentials", "TunnelConfigError", "Tunnels", "load_credentials"]

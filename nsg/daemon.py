"""The gateway daemon: load config, reconcile the dataplane, answer status, obey signals.

Config flows one way: file -> validated GatewayConfig -> nsg.compose.compose (with the leases, the
EVPN RIB's view and the ESP probe) -> one DesiredState -> nsg.engine.Engine, which sets each
subsystem's part in a declared order and rolls back on failure. Inputs that change (a lease, the
RIB, a config, a renewed LDevID) are events on one queue that the main loop turns into a new
compose + engine.set; nothing calls back into the daemon.
SIGHUP re-reads the file; an invalid file is refused and counted, and whatever was
running stays exactly as it was. SIGTERM exits and leaves the dataplane up unless
flush_on_exit is set. A periodic resync re-applies the same desired state, which
repairs drift and otherwise changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from nsg import __version__, preflight, sdnotify
from nsg.alerts import Alerts, evpn_alert_message, port_alerts, refused_macs
from nsg.compose import DESIRED_ORDER, ComposeError, compose
from nsg.confirm import CommitConfirm
from nsg.control_socket import SOCKET_NAME, ControlServer
from nsg.dataplane.reconciler import Kernel, Reconciler
from nsg.dataplane.types import Snapshot
from nsg.engine import Engine, EngineResult, Event, Subsystem, SubsystemError
from nsg.link import ControllerLink
from nsg.model import ConfigError, GatewayConfig, load_config
from nsg.model.config import dump_config
from nsg.model.status import EvpnStatus, LastApply
from nsg.policy.enforce import Enforcement
from nsg.status_doc import gateway_status, last_apply
from nsg.subsystems import (
    DataplaneSubsystem,
    DhcpSubsystem,
    EspEngineSubsystem,
    EvpnSubsystem,
    GuardSubsystem,
    IkeSubsystem,
    PolicySubsystem,
    PortGuardSubsystem,
    QosSubsystem,
    TunnelSlot,
    WorkloadsSubsystem,
)
from nsg.subsystems.resolver import ResolverSubsystem
from nsg.subsystems.upgrade import UpgradeSubsystem
from nsg.tunnels import Credentials, Tunnels
from nsg.uplinks.lease import Lease
from nsg.workloads import Workloads

log = logging.getLogger("nsg.daemon")

LAST_GOOD = "last-good-config.json"
PORT_WATCH_S = 5.0  # how often the LAN port guard's refusals are looked at (alerts)
RESYNC_FORCE = frozenset({"guard", "policy", "dataplane", "port_guard", "qos"})  # the parts that read the kernel back


class Daemon(ControllerLink):
    def __init__(
        self,
        config_path: Path | None,
        state_dir: Path,
        kernel_factory: Callable[[], Kernel],
        *,
        flush_on_exit: bool = False,
        resync_interval: float = 30.0,
        controller_url: str | None = None,
        bootstrap_wan: str | None = None,
        media_dirs: list[Path] | None = None,
        channel_retry_max: float = 60.0,
        telemetry_interval: float = 30.0,
        imds_url: str | None = None,
        docker_url: str = "unix:///run/docker.sock",
        subsystems: Mapping[str, Subsystem] | None = None,
        dhcp_clients: Callable | None = None,
        upgrade_box=None,
        reboot: Callable[[], None] | None = None,
        resolv_conf: Path | None = None,
    ):
        """``subsystems``: stand-ins for the named parts of the engine (fakes in tests: no nft, TUN or
        docker), "evpn" also as the RIB the daemon composes from; ``dhcp_clients``: the DHCP client
        factory (nsg.subsystems.dhcp); ``upgrade_box``: where the A/B slots are (nsg.upgrade.install.Box;
        None: upgrades off) and ``reboot``: how to reboot into a new slot (None: never); ``resolv_conf``:
        where the box's resolv.conf goes (nsg/resolver.py; None: nsg writes none)."""
        self.config_path = config_path
        self.resolv_conf = resolv_conf
        self.state_dir = state_dir
        self.kernel_factory = kernel_factory
        self.flush_on_exit = flush_on_exit
        self.resync_interval = resync_interval
        self.config: GatewayConfig | None = None
        self.credentials: Credentials | None = None  # the config's, loaded when it was taken (preflight)
        self.generation = 0
        self.last_apply: LastApply | None = None
        self.last_reload_error: str | None = None
        self.counters = {"applies": 0, "apply_errors": 0, "changes": 0, "reloads": 0, "reloads_rejected": 0,
                         "resyncs": 0, "drift_repairs": 0, "dhcp_errors": 0}
        self.started_at = time.time()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._pending: list[Event] = []
        self.docker_url = docker_url
        self.workloads = Workloads(state_dir, docker_url, lambda: self._device_tls() if self._device_tls else None,
                                   self._telemetry_soon)  # apps and VMs
        self.enforce = Enforcement()  # the box's input guard, the config's policy (nftables) and QoS (tc)
        self.dhcp = DhcpSubsystem(state_dir, self._on_lease, self._on_dhcp_error, dhcp_clients)
        self.tunnel_slot = TunnelSlot(lambda _peer: self._request(Event("tunnel-up")))
        self.overrides = dict(subsystems or {})
        self.alerts = Alerts()  # security alerts: kept for status, sent to the controller
        self.evpn_sub = self.overrides.get("evpn") or EvpnSubsystem(lambda: self._request(Event("evpn")),
                                                                    on_alert=self._evpn_alert)
        self.upgrades = self.overrides.get("upgrade") or UpgradeSubsystem(
            state_dir, upgrade_box, lambda: self._device_tls() if self._device_tls else None, reboot,
            self._upgrade_soon)
        self.engine: Engine | None = None  # once the kernel is open (run)
        self.credentials_epoch = 0  # bumped by a renewed LDevID: the credentials are loaded again
        self._kernel_esp: bool | None = None  # the probe's answer, once transport "esp" was asked for
        self.tenant_mtu = 1500
        self.controller_url = controller_url
        self.channel = None
        self._device_tls = None  # () -> the LDevID client TLS context, once the box has an identity
        self._telemetry_task: asyncio.Task | None = None
        self._renew: asyncio.Task | None = None
        self.bootstrap_wan = bootstrap_wan
        self.channel_retry_max = channel_retry_max
        self.telemetry_interval = telemetry_interval
        self.imds_url = imds_url
        self.media_dirs = media_dirs
        self.zerotouch = None
        self.confirm = CommitConfirm()  # configs from the controller run on trial until it confirms them
        self._confirm_timer: asyncio.Task | None = None

    # --- lifecycle ---------------------------------------------------------

    async def run(self) -> int:
        if self.bootstrap_wan is not None and self.controller_url is None:
            from nsg.zerotouch import ZeroTouch

            self.zerotouch = ZeroTouch(self.state_dir, self.bootstrap_wan, lambda op: self.kernel.apply(op),  # noqa: PLW0108 - kernel comes later
                                       media_dirs=self.media_dirs, imds_url=self.imds_url,
                                       resolv_conf=self.resolv_conf)
            done = self.zerotouch.bootstrapped()  # bootstrapped before: straight to the channel
            self.controller_url = done.channel_url if done else None
        try:
            self.config = self._boot_config()
            if self.config is not None:  # the checks `nsg check-config` makes (nsg/preflight.py)
                self.credentials = self._credentials_for(self.config, "config")
        except ConfigError as exc:
            log.error("refusing to start: %s", exc, extra={"fields": {"problems": exc.problems}})
            return 2
        self.generation = 1 if self.config is not None else 0
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.kernel = await asyncio.to_thread(self.kernel_factory)
        self.reconciler = Reconciler(self.kernel)
        self.engine = self._engine()
        control = ControlServer(self.state_dir / SOCKET_NAME, {"status": self._status, "rekey": self._rekey,
                                                                   "evpn": self._show_evpn})
        await control.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._request, Event("reload"))
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        log.info("nsg started", extra={"fields": {"version": __version__, "pid": os.getpid(),
                                                  "config": str(self.config_path)}})
        sdnotify.notify("READY=1")  # it answers on its control socket: systemd's "active"
        interval = sdnotify.watchdog_interval()
        watchdog = asyncio.get_running_loop().create_task(sdnotify.watchdog(interval)) if interval else None
        try:
            if self.config is not None:
                result = await self._converge("start")
                if result.ok:
                    self._persist_last_good()
            else:
                log.info("no config yet: waiting for the controller", extra={"fields": {"url": self.controller_url}})
            port_watch = asyncio.get_running_loop().create_task(self._watch_port_guard(), name="port-guard")
            channel_task = self._start_channel()
            if channel_task is None and self.zerotouch is not None:
                channel_task = asyncio.get_running_loop().create_task(self._bootstrap_then_channel())
            try:
                await self._main_loop()
            finally:
                for task in (channel_task, self._renew, port_watch):
                    if task is not None:
                        task.cancel()
        finally:
            await self.dhcp.stop()
            await self.tunnel_slot.stop()
            await self.workloads.stop()  # the containers and VMs keep running, like the dataplane
            await self.evpn_sub.stop()
            await self.upgrades.stop()
            if self.flush_on_exit:
                await self.enforce.flush()
                async with self._lock:
                    res = await asyncio.to_thread(self.reconciler.flush)
                log.info("dataplane flushed", extra={"fields": {"changes": len(res.changes), "error": res.error}})
            await control.close()
            if watchdog is not None:
                watchdog.cancel()
            sdnotify.notify("STOPPING=1")
            close = getattr(self.kernel, "close", None)
            if close:
                close()
            log.info("nsg stopped", extra={"fields": {"flushed": self.flush_on_exit}})
        return 0

    def stop(self) -> None:
        """End run() as SIGTERM does."""
        self._stop.set()

    def _boot_config(self) -> GatewayConfig | None:
        """The config file if given and valid; else the last config that ran (a headless boot)."""
        last = self.state_dir / LAST_GOOD
        if self.config_path is None:
            if not last.exists():
                if self.controller_url is not None or self.zerotouch is not None:
                    return None  # a fresh box: the controller sends the first config
                raise ConfigError(str(last), ["no --config given and no last good config kept yet"])
            log.warning("booting from the last good config", extra={"fields": {"path": str(last)}})
            return load_config(last)
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            if not last.exists():
                raise
            log.error("config file refused (%s); booting from the last good config", exc,
                      extra={"fields": {"problems": exc.problems, "path": str(last)}})
            self.last_reload_error = str(exc)
            return load_config(last)

    def _engine(self) -> Engine:
        enforce, slot = self.enforce, self.tunnel_slot
        order: list[Subsystem] = [
            self.dhcp, ResolverSubsystem(self.resolv_conf), GuardSubsystem(enforce), PolicySubsystem(enforce),
            EspEngineSubsystem(slot),
            DataplaneSubsystem(self.reconciler, self._lock), PortGuardSubsystem(enforce), IkeSubsystem(slot),
            QosSubsystem(enforce),
            self.evpn_sub, WorkloadsSubsystem(self.workloads), self.upgrades]
        order = [self.overrides.get(sub.name, sub) for sub in order]
        assert tuple(sub.name for sub in order) == DESIRED_ORDER
        return Engine(order)

    @property
    def leases(self) -> dict[str, Lease]:
        return self.dhcp.leases

    @property
    def tunnels(self) -> Tunnels | None:
        return self.tunnel_slot.tunnels

    @property
    def evpn(self):
        return self.evpn_sub.control

    def alert(self, reason: str, message: str, **fields: object) -> None:
        """A security alert: logged, counted, kept for `nsg status`, sent to the controller."""
        self.alerts.add(time.time(), reason, message, **fields)
        log.warning("security alert: %s", message, extra={"fields": {"reason": reason, **fields}})
        self._alerts_soon()

    def _evpn_alert(self, a) -> None:
        self.alert(a.kind, evpn_alert_message(a), **a.detail())

    async def _watch_port_guard(self, every: float = PORT_WATCH_S) -> None:
        """Alert when a LAN port refuses new MACs (the counters of table bridge nsg_port)."""
        before: dict[str, int] = {}
        while True:
            await asyncio.sleep(every)
            if self.enforce.port_guard.want is None:
                continue
            try:
                st = await self.enforce.port_guard_status()
            except Exception as exc:  # noqa: BLE001 - a reading that failed is tried again next time
                log.debug("port guard not read: %s", exc)
                continue
            system = str(self.config.system_ip) if self.config is not None else "this gateway"
            for reason, message, fields in port_alerts(before, st, every, system):
                self.alert(reason, message, **fields)
            before = refused_macs(st)
            if self.evpn is not None:  # hosts that moved to another site stop counting as local here
                remote = frozenset(f.mac for f in self.evpn.fdb() if f.master)
                try:
                    moved = await asyncio.to_thread(self.enforce.port_guard.forget_remote, remote)
                except Exception as exc:  # noqa: BLE001 - tried again next time
                    log.debug("port guard: moved MACs not forgotten: %s", exc)
                    moved = 0
                if moved:
                    log.info("port guard: MACs now at another site forgotten", extra={"fields": {"macs": moved}})

    def _request(self, event: Event) -> None:
        """The one way in for anything that changed: the main loop acts on it."""
        self._pending.append(event)
        self._wake.set()

    async def _main_loop(self) -> None:
        # The resync is due every resync_interval however busy the loop is: waiting for a quiet
        # interval instead let a steady trickle of events (EVPN routes) starve it, and with it the
        # repair of drift in the kernel, nft and tc (issue 23).
        resync_at = time.monotonic() + self.resync_interval
        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            wake = asyncio.create_task(self._wake.wait())
            await asyncio.wait({stop, wake}, timeout=max(0.0, resync_at - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
            for t in (stop, wake):
                t.cancel()
            if self._stop.is_set():
                return
            pending, self._pending = self._pending, []
            self._wake.clear()
            kinds = [e.kind for e in pending]
            now = time.monotonic()
            if now >= resync_at and "reload" not in kinds:  # a reload first; the resync right after it
                kinds.append("resync")
            if "resync" in kinds:
                resync_at = now + self.resync_interval
            if "tunnel-up" in kinds:
                self.evpn_sub.kick()  # the BGP sessions over the new SA connect now
            if "renewed" in kinds and not self._renewed():
                kinds = [k for k in kinds if k != "renewed"]  # nothing new to compose
            if "confirm-timeout" in kinds:
                await self._rollback_if_due()
            inputs = [k for k in kinds if k in ("lease", "evpn", "resync", "renewed")]
            if "reload" in kinds:
                await self._reload()
            elif inputs and self.config is not None:
                resync = "resync" in inputs  # the reason even when changes came with it (counters, log)
                await self._converge("resync" if resync else inputs[0], RESYNC_FORCE if resync else frozenset())

    # --- config ------------------------------------------------------------

    async def _reload(self) -> None:
        self.counters["reloads"] += 1
        if self.config_path is None:
            log.info("reload: no config file (the controller sends configs)")
            return
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self._refused(str(exc), exc.problems)
            return
        await self.install_config(new, "reload")

    def _refused(self, error: str, problems: list[str]) -> None:
        self.counters["reloads_rejected"] += 1
        self.last_reload_error = error
        log.error("config refused, running state kept", extra={"fields": {"problems": problems,
                                                                        "generation": self.generation}})

    async def install_config(self, new: GatewayConfig, reason: str, generation: int | None = None,
                             persist: bool = True) -> str | None:
        """Make ``new`` the running config; None on success, else why it was refused (and the
        previous config keeps running, in the kernel too). Its credentials are loaded here, once
        (the same config again keeps the ones loaded for it)."""
        try:
            creds = self._credentials_for(new, reason, self.credentials if new == self.config else None)
        except ConfigError as exc:
            self._refused(str(exc), exc.problems)
            return str(exc)
        self.last_reload_error = None
        previous = self.config, self.generation, self.credentials
        if new == self.config:
            log.info("configuration unchanged", extra={"fields": {"generation": self.generation, "reason": reason}})
        else:
            self.config, self.credentials = new, creds
            self.generation = generation if generation is not None else self.generation + 1
        result = await self._converge(reason)
        if not result.ok:
            if previous[0] is not None and new != previous[0]:
                # the engine put back what this attempt changed: the previous config runs as it was
                self.config, self.generation, self.credentials = previous
            self._refused(f"could not apply: {result.error}", [str(result.error)])
            return f"could not apply: {result.error}"
        if persist:
            self._persist_last_good()
        return None

    async def _converge(self, reason: str, force: frozenset[str] = frozenset()) -> EngineResult:
        """Compose the running config with what the box learned, and have the engine set it. The guard
        and the firewall go in before the dataplane (nsg.compose.DESIRED_ORDER): a new VXLAN device or
        subnet is never up unfiltered. A part that fails rolls back what this pass changed."""
        if self.config is None:
            return EngineResult(error=SubsystemError("compose", "no config yet"))
        assert self.engine is not None
        try:
            kernel_esp = await self._probe_esp()
            leases = self.dhcp.leases_for({u.name: u.interface for u in self.config.uplinks})
            state = compose(self.config, leases, self.evpn_sub.view(), kernel_esp=kernel_esp,
                            credentials=self.credentials)
        except ComposeError as exc:  # e.g. a lease MTU too small for any tenant MTU
            return self._record(reason, EngineResult(error=SubsystemError("compose", str(exc))))
        self.tenant_mtu = state.tenant_mtu
        return self._record(reason, await self.engine.set(state, force))

    def _credentials_for(self, cfg: GatewayConfig, source: str, kept: Credentials | None = None) -> Credentials | None:
        """``cfg``'s IPsec credentials: ``kept`` (loaded for it before) unless an LDevID renewal came
        since, else read now (nsg/preflight.py, what `nsg check-config` runs). Raises ConfigError."""
        if kept is not None and kept.epoch == self.credentials_epoch:
            return kept
        return preflight.load_credentials(cfg, self.state_dir, source, self.credentials_epoch)

    def _renewed(self) -> bool:
        """A renewed LDevID: the running config's credentials are loaded again, and the next compose
        hands them to IKE (new IKE SAs authenticate with them; the running ones stay). False if they
        could not be loaded: IKE keeps the ones it has, and the status says why."""
        self.credentials_epoch += 1
        if self.config is None:
            return True
        try:
            self.credentials = self._credentials_for(self.config, "renewed LDevID")
        except ConfigError as exc:
            self._record("renewed", EngineResult(error=SubsystemError("ike", str(exc))))
            return False
        return True

    async def _probe_esp(self) -> bool:
        """Kernel ESP (XFRM) or the userspace engine: probed once, before the first plan that needs it,
        off the event loop (a kernel that ships ESP may be asked again for up to 30 s at boot)."""
        assert self.config is not None
        if self.config.transport != "esp":
            return False
        if self._kernel_esp is None:
            from ipsec.engine import xfrm

            self._kernel_esp = (self.tunnels.kernel_esp if self.tunnels is not None
                                else await asyncio.to_thread(xfrm.probe))
        return self._kernel_esp

    def _persist_last_good(self) -> None:
        """The config in force, kept atomically so the box boots and forwards with its controller away.
        Mode 0600: it may hold the IPsec PSK."""
        assert self.config is not None
        path = self.state_dir / LAST_GOOD
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(dump_config(self.config))
        os.replace(tmp, path)

    async def _show_evpn(self, _req: dict) -> dict:
        if self.evpn is None:
            raise ValueError("EVPN is not configured (no 'evpn' section in the running config)")
        return {**self.evpn.show(), **EvpnStatus.model_validate(self.evpn.status()).model_dump(mode="json")}

    async def _rekey(self, req: dict) -> dict:
        peer, ike = req.get("peer"), bool(req.get("ike"))
        if self.tunnels is None or not isinstance(peer, str) or not self.tunnels.rekey(peer, ike):
            raise ValueError(f"no IKE peering {peer!r}")
        return {"peer": peer, "rekey": "ike" if ike else "child"}

    def _on_lease(self, uplink: str) -> None:
        lease = self.leases.get(uplink)
        log.info("dhcp lease", extra={"fields": {"uplink": uplink, "address": lease and str(lease.address),
                                                 "gateway": lease and str(lease.gateway)}})
        self._request(Event("lease"))

    def _on_dhcp_error(self, uplink: str, message: str) -> None:
        self.counters["dhcp_errors"] += 1
        log.warning(message, extra={"fields": {"uplink": uplink}})

    # --- results -----------------------------------------------------------

    def _record(self, reason: str, result: EngineResult) -> EngineResult:
        """Counters, `nsg status` last_apply (the dataplane's operations, as before) and the log."""
        dp = result.of("dataplane")
        self.counters["applies"] += 1
        self.counters["changes"] += len(dp.ops)
        if reason == "resync":
            self.counters["resyncs"] += 1
            if dp.ops:
                self.counters["drift_repairs"] += 1
        if not result.ok:
            self.counters["apply_errors"] += 1
        la = self.last_apply = last_apply(self.generation, reason, result)
        fields = {"generation": self.generation, "reason": reason, "changes": len(dp.ops),
                  "waiting": la.waiting, "ms": round(dp.duration_ms, 1), "subsystems": la.subsystems}
        if not result.ok:
            log.error("apply failed: %s", la.error, extra={"fields": {**fields, "failed": la.failed,
                                                                  "rolled_back": la.rolled_back_subsystems}})
        elif dp.ops:
            log.info("applied %d changes", len(dp.ops), extra={"fields": {**fields, "ops": la.changes}})
        elif reason == "resync":
            log.debug("resync: no changes", extra={"fields": fields})
        else:
            log.info("applied: no changes", extra={"fields": fields})
        return result

    # --- status ------------------------------------------------------------

    async def kernel_snapshot(self) -> Snapshot:
        """What the kernel holds now (netlink, in a worker thread; not while the dataplane applies)."""
        async with self._lock:
            return await asyncio.to_thread(self.kernel.snapshot)

    async def _status(self, _req: dict) -> dict:
        return (await gateway_status(self)).model_dump(mode="json")


def run_daemon(config: Path | None, state_dir: Path, *, flush_on_exit: bool, resync_interval: float,
               controller_url: str | None = None, bootstrap_wan: str | None = None,
               media_dirs: list[Path] | None = None, channel_retry_max: float = 60.0,
               imds_url: str | None = None, docker_url: str = "unix:///run/docker.sock",
               telemetry_interval: float = 30.0, test_upgrade_box: Path | None = None,
               resolv_conf: Path | None = None) -> int:
    from nsg.dataplane.netlink import NetlinkAdapter
    from nsg.subsystems.upgrade import box_and_reboot

    box, reboot = box_and_reboot(state_dir, test_upgrade_box)  # the appliance's; a file box for tests
    daemon = Daemon(config, state_dir, NetlinkAdapter, flush_on_exit=flush_on_exit,
                    resync_interval=resync_interval, controller_url=controller_url, bootstrap_wan=bootstrap_wan,
                    media_dirs=media_dirs, channel_retry_max=channel_retry_max, imds_url=imds_url,
                    docker_url=docker_url, telemetry_interval=telemetry_interval, upgrade_box=box, reboot=reboot,
                    resolv_conf=resolv_conf)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(daemon.run())
    return 0

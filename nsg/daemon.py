"""The gateway daemon: load config, reconcile the dataplane, answer status, obey signals.

Config flows one way: file -> validated GatewayConfig -> Desired -> Reconciler.
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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from nsg import __version__, preflight
from nsg.confirm import CommitConfirm
from nsg.control import SOCKET_NAME, ControlServer
from nsg.dataplane.desired import bridge_name, build_desired, vxlan_name
from nsg.dataplane.reconciler import ApplyResult, Kernel, Reconciler
from nsg.link import ControllerLink
from nsg.model import ConfigError, GatewayConfig, load_config
from nsg.model.config import dump_config
from nsg.policy.enforce import Enforcement
from nsg.tunnels import TunnelConfigError, Tunnels
from nsg.uplinks.dhcp import DhcpClient, write_hook
from nsg.uplinks.lease import Lease
from nsg.workloads import Workloads

log = logging.getLogger("nsg.daemon")

LAST_GOOD = "last-good-config.json"
MAX_OPS_SHOWN = 100  # operations listed in the log and in status per apply (all are counted)


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
    ):
        self.config_path = config_path
        self.state_dir = state_dir
        self.kernel_factory = kernel_factory
        self.flush_on_exit = flush_on_exit
        self.resync_interval = resync_interval
        self.config: GatewayConfig | None = None
        self.generation = 0
        self.leases: dict[str, Lease] = {}
        self.dhcp: dict[str, DhcpClient] = {}
        self.last_apply: dict | None = None
        self.last_reload_error: str | None = None
        self.counters = {"applies": 0, "apply_errors": 0, "changes": 0, "reloads": 0, "reloads_rejected": 0,
                         "resyncs": 0, "drift_repairs": 0, "dhcp_errors": 0}
        self.started_at = time.time()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._pending: list[str] = []
        self.tunnels: Tunnels | None = None
        self.evpn = None
        self.neigh_watch = None
        self.docker_url = docker_url
        self.workloads = Workloads(state_dir, docker_url, lambda: self._device_tls() if self._device_tls else None,
                                   self._telemetry_soon)  # apps and VMs
        self.enforce = Enforcement()  # the config's policy (nftables) and QoS (tc)
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

    @property
    def identity_dir(self) -> Path:
        """The box's identity store: IDevID, LDevID (ipsec auth "ldevid"), the controller's CA."""
        return preflight.identity_dir(self.state_dir)

    # --- lifecycle ---------------------------------------------------------

    async def run(self) -> int:
        if self.bootstrap_wan is not None and self.controller_url is None:
            from nsg.zerotouch import ZeroTouch

            self.zerotouch = ZeroTouch(self.state_dir, self.bootstrap_wan, lambda op: self.kernel.apply(op),  # noqa: PLW0108 - kernel comes later
                                       media_dirs=self.media_dirs, imds_url=self.imds_url)
            done = self.zerotouch.bootstrapped()  # bootstrapped before: straight to the channel
            self.controller_url = done.channel_url if done else None
        try:
            self.config = self._boot_config()
            if self.config is not None:  # the checks `nsg check-config` makes (nsg/preflight.py)
                preflight.check_credentials(self.config, self.state_dir)
        except ConfigError as exc:
            log.error("refusing to start: %s", exc, extra={"fields": {"problems": exc.problems}})
            return 2
        self.generation = 1 if self.config is not None else 0
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.kernel = await asyncio.to_thread(self.kernel_factory)
        self.reconciler = Reconciler(self.kernel)
        control = ControlServer(self.state_dir / SOCKET_NAME, {"status": self._status, "rekey": self._rekey,
                                                                   "evpn": self._show_evpn})
        await control.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._request, "reload")
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        log.info("nsg started", extra={"fields": {"version": __version__, "pid": os.getpid(),
                                                  "config": str(self.config_path)}})
        try:
            if self.config is not None:
                result = await self._converge("start")
                if result.ok:
                    self._persist_last_good()
            else:
                log.info("no config yet: waiting for the controller", extra={"fields": {"url": self.controller_url}})
            channel_task = self._start_channel()
            if channel_task is None and self.zerotouch is not None:
                channel_task = asyncio.get_running_loop().create_task(self._bootstrap_then_channel())
            try:
                await self._main_loop()
            finally:
                for task in (channel_task, self._renew):
                    if task is not None:
                        task.cancel()
        finally:
            for client in self.dhcp.values():
                await client.stop()
            if self.tunnels is not None:
                await self.tunnels.stop()
            if self.neigh_watch is not None:
                await asyncio.to_thread(self.neigh_watch.stop)
            await self.workloads.stop()  # the containers and VMs keep running, like the dataplane
            if self.evpn is not None:
                await self.evpn.stop()
            if self.flush_on_exit:
                await self.enforce.flush()
                async with self._lock:
                    res = await asyncio.to_thread(self.reconciler.flush)
                log.info("dataplane flushed", extra={"fields": {"changes": len(res.changes), "error": res.error}})
            await control.close()
            close = getattr(self.kernel, "close", None)
            if close:
                close()
            log.info("nsg stopped", extra={"fields": {"flushed": self.flush_on_exit}})
        return 0

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

    def _request(self, what: str) -> None:
        self._pending.append(what)
        self._wake.set()

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            wake = asyncio.create_task(self._wake.wait())
            done, _ = await asyncio.wait({stop, wake}, timeout=self.resync_interval,
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in (stop, wake):
                t.cancel()
            if self._stop.is_set():
                return
            pending, self._pending = self._pending, []
            self._wake.clear()
            if not done:
                pending = ["resync"]
            if "renewed" in pending and self.config is not None and self.tunnels is not None:
                # a new LDevID: new IKE SAs authenticate with it; the running ones stay up
                try:
                    self.tunnels.apply(self.config, self._local_ip())
                except TunnelConfigError as exc:
                    log.error("renewed LDevID not usable: %s", exc)
                pending = [p for p in pending if p != "renewed"]
            if "confirm-timeout" in pending:
                await self._rollback_if_due()
                pending = [p for p in pending if p != "confirm-timeout"]
            if "reload" in pending:
                await self._reload()
            elif pending:
                if pending[0] == "resync" and self.config is not None:
                    await self.enforce.sync_guard(self.config, verify=True)
                    await self.enforce.sync_policy(self.config, verify=True)  # our table deleted behind our back
                    await self.enforce.sync_qos(self.config)  # a missing tree, or an uplink that appeared since
                await self._apply(pending[0])

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
        previous config keeps running, in the kernel too)."""
        try:
            preflight.check_credentials(new, self.state_dir, reason)
        except ConfigError as exc:
            self._refused(str(exc), exc.problems)
            return str(exc)
        self.last_reload_error = None
        previous, previous_generation = self.config, self.generation
        if new == self.config:
            log.info("configuration unchanged", extra={"fields": {"generation": self.generation, "reason": reason}})
        else:
            self.config = new
            self.generation = generation if generation is not None else self.generation + 1
        result = await self._converge(reason)
        if not result.ok:
            if previous is not None and new != previous:
                self.config, self.generation = previous, previous_generation
                await self._converge(f"{reason}-rollback")
            self._refused(f"could not apply: {result.error}", [str(result.error)])
            return f"could not apply: {result.error}"
        if persist:
            self._persist_last_good()
        return None

    async def _converge(self, reason: str) -> ApplyResult:
        self._sync_dhcp()
        # The box's input guard, then the firewall, go in before the dataplane: a new VXLAN device or
        # subnet is never up unfiltered. A ruleset nft refuses fails the whole config (the kernel kept
        # the old one; install_config rolls back).
        assert self.config is not None
        guard_error = await self.enforce.sync_guard(self.config)
        if guard_error is not None:
            return ApplyResult((), (), guard_error)
        policy_error = await self.enforce.sync_policy(self.config)
        if policy_error is not None:
            return ApplyResult((), (), policy_error)
        await self._sync_tunnels(before_apply=True)
        result = await self._apply(reason)
        await self._sync_tunnels(before_apply=False)
        qos_error = await self.enforce.sync_qos(self.config)
        if qos_error is not None and result.ok:
            return ApplyResult(result.changes, result.waiting, qos_error)
        self._sync_evpn()
        self.workloads.sync(self.config, self.tenant_mtu)
        return result

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

    def _local_ip(self) -> str:
        assert self.config is not None
        for u in self.config.uplinks:
            if u.address is not None:
                return str(u.address.ip)
            if u.name in self.leases:
                return str(self.leases[u.name].address.ip)
        return "0.0.0.0"

    async def _sync_tunnels(self, before_apply: bool) -> None:
        """transport "esp": the engine's TUN exists before the dataplane routes into it;
        IKE starts (or follows the new config) once the routes are in place."""
        assert self.config is not None
        want = self.config.transport == "esp"
        if before_apply:
            if want and self.tunnels is None:
                self.tunnels = Tunnels(self.identity_dir)
                self.tunnels.start_engine(self.config)
            return
        if not want:
            if self.tunnels is not None:
                await self.tunnels.stop()
                self.tunnels = None
            return
        assert self.tunnels is not None
        if self.tunnels.manager is None:
            self.tunnels.on_established = lambda _peer: self.evpn.kick() if self.evpn is not None else None
            await self.tunnels.start_ike(self.config, self._local_ip())
        else:
            self.tunnels.apply(self.config, self._local_ip())

    def _sync_evpn(self) -> None:
        """With an evpn section: BGP toward its peers; the RIB then feeds the dataplane."""
        assert self.config is not None
        if self.config.evpn is None:
            return
        if self.evpn is None:
            from nsg.evpn.control import EvpnControl
            from nsg.evpn.rib import EvpnRib

            self.evpn = EvpnControl(EvpnRib(), lambda: self._request("evpn"))
        self.evpn.apply(self.config, self._local_ip())
        if self.neigh_watch is None:
            from nsg.evpn.watch import NeighWatch

            loop = asyncio.get_running_loop()
            evpn = self.evpn
            self.neigh_watch = NeighWatch(lambda vnis, events: loop.call_soon_threadsafe(evpn.on_local, vnis, events))
        self.neigh_watch.set_bridges({bridge_name(s.vni): s.vni for s in self.config.subnets})

    async def _show_evpn(self, _req: dict) -> dict:
        if self.evpn is None:
            raise ValueError("EVPN is not configured (no 'evpn' section in the running config)")
        return {**self.evpn.show(), **self.evpn.status()}

    async def _rekey(self, req: dict) -> dict:
        peer, ike = req.get("peer"), bool(req.get("ike"))
        if self.tunnels is None or not isinstance(peer, str) or not self.tunnels.rekey(peer, ike):
            raise ValueError(f"no IKE peering {peer!r}")
        return {"peer": peer, "rekey": "ike" if ike else "child"}

    def _sync_dhcp(self) -> None:
        assert self.config is not None
        wanted = {u.name: u.interface for u in self.config.uplinks if u.mode == "dhcp"}
        for name in list(self.dhcp):
            if wanted.get(name) != self.dhcp[name].interface:
                client = self.dhcp.pop(name)
                self.leases.pop(name, None)
                asyncio.get_running_loop().create_task(client.stop())
        if not wanted:
            return
        hook = write_hook(self.state_dir)
        for name, ifname in wanted.items():
            if name not in self.dhcp:
                client = DhcpClient(name, ifname, hook, self._on_lease, self._on_dhcp_error)
                self.dhcp[name] = client
                client.start()

    def _on_lease(self, uplink: str, lease: Lease | None) -> None:
        if self.leases.get(uplink) == lease:
            return
        if lease is None:
            self.leases.pop(uplink, None)
        else:
            self.leases[uplink] = lease
        log.info("dhcp lease", extra={"fields": {"uplink": uplink, "address": lease and str(lease.address),
                                                 "gateway": lease and str(lease.gateway)}})
        self._request("lease")

    def _on_dhcp_error(self, uplink: str, message: str) -> None:
        self.counters["dhcp_errors"] += 1
        log.warning(message, extra={"fields": {"uplink": uplink}})

    # --- dataplane ---------------------------------------------------------

    async def _apply(self, reason: str) -> ApplyResult:
        if self.config is None:
            return ApplyResult((), (), "no config yet")
        async with self._lock:
            try:
                esp_tun = self.tunnels is None or self.tunnels.backend == "userspace"
                evpn_fdb = self.evpn.fdb() if self.evpn is not None else None
                evpn_neigh = self.evpn.neighbors() if self.evpn is not None else None
                evpn_routes = self.evpn.routes() if self.evpn is not None else None
                desired = build_desired(self.config, self.leases, esp_tun=esp_tun, evpn_fdb=evpn_fdb,
                                        evpn_neighbors=evpn_neigh, evpn_routes=evpn_routes,
                                        guests=self.workloads.guest_ports(self.config, self.tenant_mtu))
                self.tenant_mtu = next((s.mtu for s in desired.links if s.kind == "bridge"), self.tenant_mtu)
            except ValueError as exc:  # e.g. a lease MTU too small for any tenant MTU
                result = ApplyResult((), (), f"cannot build the desired state: {exc}")
            else:
                # EVPN changes (a MAC, a flood entry) touch entries only: the incremental path skips
                # reading the whole kernel; everything else, and the periodic resync, goes in full
                fn = self.reconciler.apply_incremental if reason == "evpn" else self.reconciler.apply
                result = await asyncio.to_thread(fn, desired)
        self.counters["applies"] += 1
        self.counters["changes"] += len(result.changes)
        if reason == "resync":
            self.counters["resyncs"] += 1
            if result.changes:
                self.counters["drift_repairs"] += 1
        if not result.ok:
            self.counters["apply_errors"] += 1
        # a big change (10,000 EVPN routes) is not kept or logged op by op
        shown = list(result.changes[:MAX_OPS_SHOWN])
        self.last_apply = {"generation": self.generation, "reason": reason,
                           **{**asdict(result), "changes": shown}, "changes_made": len(result.changes)}
        fields = {"generation": self.generation, "reason": reason, "changes": len(result.changes),
                  "waiting": list(result.waiting), "ms": round(result.duration_ms, 1)}
        if not result.ok:
            log.error("apply failed: %s", result.error, extra={"fields": {**fields,
                                                                         "rolled_back": result.rolled_back}})
        elif result.changes:
            log.info("applied %d changes", len(result.changes), extra={"fields": {**fields, "ops": shown}})
        elif reason == "resync":
            log.debug("resync: no changes", extra={"fields": fields})
        else:
            log.info("applied: no changes", extra={"fields": fields})
        return result

    # --- status ------------------------------------------------------------

    async def _status(self, _req: dict) -> dict:
        cfg = self.config
        if cfg is None:
            return {"version": __version__, "pid": os.getpid(), "config": None, "last_apply": None,
                    "channel": self.channel.status() if self.channel else None, "counters": dict(self.counters),
                    "last_reload_error": self.last_reload_error,
                    "bootstrap": self.zerotouch.status() if self.zerotouch else None}
        async with self._lock:
            snap = await asyncio.to_thread(self.kernel.snapshot)
        ours = {n for n, link in snap.links.items() if link.owned}
        ports = {p for s in cfg.subnets for p in s.ports}
        devices = []
        for name in sorted(ours | (ports & set(snap.links))):
            link = snap.links[name]
            devices.append({"name": name, "kind": link.kind, "mtu": link.mtu, "up": link.up,
                            "master": link.master, "vni": link.vxlan.vni if link.vxlan else None,
                            "owned": link.owned})
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "config": {"path": str(self.config_path), "generation": self.generation,
                       "config_generation": cfg.generation, "system_ip": str(cfg.system_ip),
                       "transport": cfg.transport},
            "uplinks": [
                {"name": u.name, "interface": u.interface, "mode": u.mode,
                 "address": str(u.address or (self.leases[u.name].address if u.name in self.leases else "")),
                 "gateway": str(u.gateway or (self.leases[u.name].gateway if u.name in self.leases else ""))}
                for u in cfg.uplinks
            ],
            "subnets": [
                {"name": s.name, "vni": s.vni, "cidr": str(s.cidr), "gateway": str(s.gateway),
                 "bridge": bridge_name(s.vni), "vxlan": vxlan_name(s.vni), "ports": list(s.ports)}
                for s in cfg.subnets
            ],
            "peers": [{"name": p.name, "system_ip": str(p.system_ip), "endpoint": str(p.endpoint)}
                      for p in cfg.peers],
            "devices": devices,
            "fdb": sorted(f"{f.ifname} {f.mac} master" if f.master else f"{f.ifname} {f.mac} dst {f.dst}"
                          for f in snap.fdb),
            "neighbors": sorted(f"{n.ifname} {n.ip} lladdr {n.mac}" for n in snap.neighbors),
            "tunnels": self.tunnels.status() if self.tunnels else None,
            "channel": self.channel.status() if self.channel else None,
            "bootstrap": self.zerotouch.status() if self.zerotouch else None,
            "evpn": self.evpn.status() if self.evpn else None,
            **self.workloads.status(),
            "guard": await self.enforce.guard_status(),
            "policy": await self.enforce.policy_status(),
            "qos": await self.enforce.qos_status(),
            "last_apply": self.last_apply,
            "commit_confirm": self.confirm.status(time.monotonic()),
            "last_reload_error": self.last_reload_error,
            "counters": dict(self.counters),
        }


def run_daemon(config: Path | None, state_dir: Path, *, flush_on_exit: bool, resync_interval: float,
               controller_url: str | None = None, bootstrap_wan: str | None = None,
               media_dirs: list[Path] | None = None, channel_retry_max: float = 60.0,
               imds_url: str | None = None, docker_url: str = "unix:///run/docker.sock",
               telemetry_interval: float = 30.0) -> int:
    from nsg.dataplane.netlink import NetlinkAdapter

    daemon = Daemon(config, state_dir, NetlinkAdapter, flush_on_exit=flush_on_exit,
                    resync_interval=resync_interval, controller_url=controller_url, bootstrap_wan=bootstrap_wan,
                    media_dirs=media_dirs, channel_retry_max=channel_retry_max, imds_url=imds_url,
                    docker_url=docker_url, telemetry_interval=telemetry_interval)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(daemon.run())
    return 0

"""The gateway's tenant apps: config -> container specs -> the containers library, on a loop.

Desired state flows one way: the running config's `apps` become AppSpecs (the subnet's bridge, the
app's address with the subnet's prefix, the subnet gateway as default route, the tenant MTU). A pass
reconciles the engine to them (containers/app_runner.py) in a worker thread; passes run when the config
changes and every ``interval`` seconds, which repairs drift (a container killed or removed outside
nsg, a dockerd restart) within that time. An app's MAC is learned on its bridge port like a LAN
host's, so EVPN announces it with nothing app-specific.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from containers.spec import AppSpec
from containers.stats import cpu_percent, parse
from nsg.dataplane.desired import bridge_name
from nsg.model import GatewayConfig
from nsg.model.status import AppsStatus, AppStatus, VmStatus

log = logging.getLogger("nsg.apps")


def specs(cfg: GatewayConfig, mtu: int) -> dict[str, AppSpec]:
    out = {}
    for app in cfg.apps:
        subnet = next(s for s in cfg.subnets if s.name == app.subnet)  # the config model checked it
        out[app.name] = AppSpec(
            name=app.name, image=app.image, bridge=bridge_name(subnet.vni),
            address=f"{app.address}/{subnet.cidr.prefixlen}", gateway=str(subnet.gateway), mtu=mtu,
            command=app.command, env=app.env, memory_mb=app.memory_mb, cpus=app.cpus, pids=app.pids,
            restart=app.restart, image_url=app.image_source.url if app.image_source else None,
            image_sha256=app.image_source.sha256 if app.image_source else None)
    return out


NO_USAGE = {"memory_mb": None, "cpu_percent": None}


class Supervisor:
    """Reconcile passes for one kind of workload, in a worker thread: when the desired state changes
    and every ``interval`` seconds (which repairs drift). ``on_change`` is called (in the event loop)
    when what status() reports under REPORTED changed, so the controller hears of it at once."""

    kind = "workloads"

    def __init__(self, interval: float = 2.0, on_change: Callable[[], None] | None = None):
        self.interval = interval
        self.on_change = on_change
        self.desired: dict = {}
        self._task: asyncio.Task | None = None
        self._kick = asyncio.Event()
        self.last: dict = {"at": None, "changes": [], "errors": {}}
        self.state: dict[str, dict] = {}
        self.counters = {"passes": 0, "changes": 0, "errors": 0, "repairs": 0}

    def set(self, desired: dict) -> None:
        if desired != self.desired:
            self.desired = desired
            self._kick.set()
        if self._task is None and desired:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        first = True
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            kicked = self._kick.is_set()
            self._kick.clear()
            before = self._reported()
            try:
                await asyncio.to_thread(self._pass, first or kicked)
                if self.on_change is not None and self._reported() != before:
                    self.on_change()
            except Exception as exc:  # noqa: BLE001 - one bad pass must not end supervision for good
                self.counters["errors"] += 1
                self._reset()
                log.error("%s pass failed: %s", self.kind, exc, extra={"fields": {"error": repr(exc)}})
            first = False

    def _reset(self) -> None:
        """Forget cached handles after a pass failed unexpectedly."""

    def _pass(self, expected: bool) -> None:
        raise NotImplementedError

    def _account(self, changes: list[str], errors: dict[str, str], expected: bool) -> None:
        """Counters and the last pass's outcome. Changes on a pass nobody asked for are drift repairs."""
        self.counters["changes"] += len(changes)
        self.counters["errors"] += len(errors)
        if changes and not expected:
            self.counters["repairs"] += 1
        self.last = {"at": time.time(), "changes": changes, "errors": errors}
        if changes or errors:
            log.info("%s reconciled", self.kind, extra={"fields": {"changes": changes, "errors": errors,
                                                                   "repair": not expected}})

    def _reported(self) -> list:
        """What changes here is reported at once (state, attached, restarts, OOM kill, error)."""
        return [w.reported() for w in self.workloads()]

    def workloads(self) -> list[AppStatus] | list[VmStatus]:
        """Each workload's status, as status() lists it."""
        raise NotImplementedError


class AppsSupervisor(Supervisor):
    """Containers. ``cache``: where downloaded image tarballs are kept; ``tls``: the client context
    for https image sources."""

    kind = "apps"

    def __init__(self, docker_url: str, interval: float = 2.0, *, cache: Path | None = None,
                 tls: Callable | None = None, on_change: Callable[[], None] | None = None,
                 stats_interval: float = 5.0):
        super().__init__(interval, on_change)
        self.docker_url = docker_url
        self.cache = cache
        self.tls = tls
        self._apps = None  # containers.app_runner.Apps, made on first use (the engine may come up later)
        # Memory and CPU come from a loop of their own: the engine may take a second per container to
        # answer a stats call, which must not hold up a reconcile pass.
        self.stats_interval = stats_interval
        self._running: dict[str, str] = {}  # app -> container id, as the last pass saw them running
        self._cpu: dict[str, tuple[float, int]] = {}  # app -> last (monotonic, cpu_ns) reading
        self._usage: dict[str, dict] = {}  # app -> {"memory_mb", "cpu_percent"}
        self._stats_task: asyncio.Task | None = None
        self._local = threading.local()  # one engine client per stats worker thread

    def _reset(self) -> None:
        self._apps = None

    def set(self, desired: dict) -> None:
        super().set(desired)
        if self._stats_task is None and desired:
            self._stats_task = asyncio.get_running_loop().create_task(self._stats_loop())

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        await super().stop()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            running = dict(self._running)
            if not running:
                continue
            try:
                found = await asyncio.gather(*(asyncio.to_thread(self._sample, cid) for cid in running.values()))
            except Exception as exc:  # noqa: BLE001 - numbers for telemetry; the next round tries again
                log.debug("app stats failed: %s", exc)
                continue
            now = time.monotonic()
            usage = {}
            for name, sample in zip(running, found, strict=True):
                pct = None
                if sample is not None and sample.cpu_ns is not None:
                    last = self._cpu.get(name)
                    pct = cpu_percent(last, (now, sample.cpu_ns)) if last else None
                    self._cpu[name] = (now, sample.cpu_ns)
                mem = sample.memory_bytes if sample is not None else None
                mem = None if mem is None else round(mem / (1 << 20), 1)
                usage[name] = {"memory_mb": mem, "cpu_percent": pct}
            self._usage = usage
            self._cpu = {n: v for n, v in self._cpu.items() if n in running}

    def _sample(self, container_id: str):
        """One container's stats (a worker thread with its own engine client); None if unavailable."""
        from containers.docker_backend import DockerBackend, EngineError

        try:
            if getattr(self._local, "engine", None) is None:
                self._local.engine = DockerBackend(self.docker_url)
            return parse(self._local.engine.stats(container_id))
        except EngineError:
            self._local.engine = None
            return None

    def _pass(self, expected: bool) -> None:
        from containers.app_runner import Apps
        from containers.docker_backend import DockerBackend, EngineError

        self.counters["passes"] += 1
        try:
            if self._apps is None:
                self._apps = Apps(DockerBackend(self.docker_url), cache=self.cache, tls=self.tls)
            res = self._apps.apply(self.desired)
            actual = self._apps.actual(self.desired)
        except EngineError as exc:
            self._apps = None
            self.last = {"at": time.time(), "changes": [], "errors": {"*": str(exc)}}
            self.state = {name: {"state": "unknown", "attached": None} for name in self.desired}  # not stale news
            self.counters["errors"] += 1
            log.warning("apps: engine unavailable", extra={"fields": {"error": str(exc)}})
            return
        self._account(res.changes, res.errors, expected)
        self.state = {name: {"state": r.state, "restarts": r.restarts, "oom_killed": r.oom_killed,
                             "attached": r.attachment is not None,
                             "address": r.attachment.address if r.attachment else None}
                      for name, r in actual.items()}
        self._running = {name: r.container_id for name, r in actual.items() if r.pid and name in self.desired}

    def workloads(self) -> list[AppStatus]:
        # what the last pass saw (nothing yet: state "absent" only, no restart count; its address, once attached)
        return [AppStatus.model_validate({"name": n, "image": s.image, "address": s.address, "bridge": s.bridge,
                                          **self.state.get(n, {"state": "absent"}),
                                          **((self._usage.get(n) if n in self._running else None) or NO_USAGE),
                                          "error": self.last["errors"].get(n)})
                for n, s in sorted(self.desired.items())]

    def status(self) -> AppsStatus:
        return AppsStatus(apps=self.workloads(), engine_error=self.last["errors"].get("*"),
                          counters=dict(self.counters), last_pass=self.last["at"])

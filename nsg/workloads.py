"""The daemon's tenant workloads: the apps' (containers) and VMs' supervisors, made on first need,
fed the config's specs, and what they report for `nsg status` and telemetry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nsg.model.status import WorkloadsStatus

APP_KEYS = ("state", "attached", "address", "restarts", "oom_killed", "memory_mb", "cpu_percent", "error")
VM_KEYS = ("state", "attached", "address", "restarts", "error")


class Workloads:
    """``tls``: the client context for https image sources (None until the box has an identity);
    ``on_change``: an app's or VM's reported state changed (the daemon sends telemetry at once)."""

    def __init__(self, state_dir: Path, docker_url: str, tls: Callable, on_change: Callable[[], None]):
        self.state_dir = state_dir
        self.docker_url = docker_url
        self.tls = tls
        self.on_change = on_change
        self.apps = None  # nsg.app_supervisor.AppsSupervisor once a config has apps
        self.vms = None  # nsg.vms.VmSupervisor once a config has VMs

    def set(self, apps: dict, vms: dict) -> bool:
        """The apps' and VMs' specs (nsg.compose computed them with the tenant MTU); a supervisor is made
        on first need and, once made, told every change (an empty dict removes what it runs)."""
        touched = False
        if apps or self.apps is not None:
            from nsg.app_supervisor import AppsSupervisor

            if self.apps is None:
                self.apps = AppsSupervisor(self.docker_url, cache=self.state_dir / "images", tls=self.tls,
                                           on_change=self.on_change)
            self.apps.set(dict(apps))
            touched = True
        if vms or self.vms is not None:
            from nsg.vms import VmSupervisor

            if self.vms is None:  # their own image cache: the apps' pass prunes theirs
                self.vms = VmSupervisor(self.state_dir / "vms", cache=self.state_dir / "vm-images", tls=self.tls,
                                        on_change=self.on_change)
            self.vms.set(dict(vms))
            touched = True
        return touched

    async def stop(self) -> None:
        """Supervision ends; the containers and VMs keep running (the next daemon adopts them)."""
        for sup in (self.apps, self.vms):
            if sup is not None:
                await sup.stop()

    def status(self) -> WorkloadsStatus:
        return WorkloadsStatus(apps=self.apps.status() if self.apps else None,
                               vms=self.vms.status() if self.vms else None)

    def counters(self) -> dict[str, int | float | str | None]:
        """Telemetry: app.<name>.<key> (at most 64 apps x 8) and vm.<name>.<key> (16 x 5); a value
        the last pass did not see (an app not started yet has no restart count) is None."""
        out: dict[str, int | float | str | None] = {}
        for prefix, sup, keys in (("app", self.apps, APP_KEYS), ("vm", self.vms, VM_KEYS)):
            for w in sup.workloads() if sup is not None else ():
                for k in keys:  # the models' field names
                    v = getattr(w, k)
                    out[f"{prefix}.{w.name}.{k}"] = int(v) if isinstance(v, bool) else v
        return out

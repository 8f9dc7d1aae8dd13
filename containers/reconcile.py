"""Desired apps vs the containers nsg owns -> the operations that turn one into the other. Pure.

- an owned container no app wants: removed;
- an app without a container, or whose container was made from another spec (digest label): a new
  container, started and attached;
- a container that is not running (killed, stopped, exited; dockerd restarted without it): started
  and attached again (a new process has a new network namespace);
- a running container whose interface is missing or differs from the spec: attached (again).
A container that docker itself is restarting is left alone; the next pass attaches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from containers.spec import AppSpec, Attachment, Running


@dataclass(frozen=True)
class Create:
    spec: AppSpec

    def __str__(self) -> str:
        return f"create {self.spec.container_name} from {self.spec.image}"


@dataclass(frozen=True)
class Remove:
    name: str
    container_id: str

    def __str__(self) -> str:
        return f"remove {self.name} ({self.container_id[:12]})"


@dataclass(frozen=True)
class Start:
    spec: AppSpec

    def __str__(self) -> str:
        return f"start {self.spec.container_name}"


@dataclass(frozen=True)
class Attach:
    spec: AppSpec

    def __str__(self) -> str:
        s = self.spec
        return f"attach {s.container_name} eth0 {s.address} to {s.bridge} mtu {s.mtu}"


Op = Create | Remove | Start | Attach


def wanted_attachment(spec: AppSpec) -> Attachment:
    return Attachment(spec.bridge, spec.address, spec.gateway, spec.mtu)


def plan(desired: Mapping[str, AppSpec], actual: Mapping[str, Running]) -> list[Op]:
    ops: list[Op] = []
    for name, run in sorted(actual.items()):
        if name not in desired:
            ops.append(Remove(name, run.container_id))
    for name, spec in sorted(desired.items()):
        run = actual.get(name)
        if run is not None and run.digest != spec.digest():
            ops.append(Remove(name, run.container_id))
            run = None
        if run is None:
            ops += [Create(spec), Start(spec), Attach(spec)]
        elif run.state == "restarting":
            continue
        elif run.state != "running":
            ops += [Start(spec), Attach(spec)]
        elif run.attachment != wanted_attachment(spec):
            ops.append(Attach(spec))
    return ops

"""VM workloads: qemu with a TAP device on the tenant bridge, the same attachment a container gets.

nsg makes a persistent TAP device (``v-`` + 12 hex of the name's hash), puts it on the subnet's
bridge with the tenant MTU, then starts qemu on it with a stable MAC. The guest is told its address
on its kernel command line (``nsg.ip=ADDR/PREFIX nsg.gw=GW nsg.mtu=N``). qemu runs in a session of
its own, so a VM outlives a daemon restart; each VM's pid and spec digest are kept in
``<state>/vms/<name>.json`` and the next daemon adopts it (checking the pid is still that qemu, by
the ``-name`` marker on its command line, before it ever signals it).

Blocking (processes, netlink): the daemon calls ``apply`` from a worker thread. Reconcile rules:
a wanted VM that is not running is started (a death counts as a restart); one whose spec changed is
stopped and started; a TAP that left its bridge is put back; a TAP that vanished means a restart
(qemu's descriptor points at a deleted device); VMs no longer wanted are stopped and their TAPs go.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from containers import attach, image_fetch
from containers.image_fetch import ImageError, TlsContext

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
CONSOLE_MAX = 4 << 20  # a guest's console log is cut back to its last CONSOLE_KEEP bytes beyond this
CONSOLE_KEEP = 256 << 10
MAX_BACKOFF = 60.0  # a VM that keeps dying is started again at most this often


def backoff(restarts: int) -> float:
    """Seconds after its last start before a dead VM is started again: 1, 2, 4 ... 60."""
    return min(2.0 ** min(restarts, 6), MAX_BACKOFF)


class VmError(RuntimeError):
    """A VM could not be started or wired (a local fault), with the reason."""


@dataclass(frozen=True)
class VmSpec:
    name: str
    bridge: str
    address: str  # "198.19.0.70/24": given to the guest on its command line
    gateway: str | None
    mtu: int
    kernel_url: str
    kernel_sha256: str
    initrd_url: str | None = None
    initrd_sha256: str | None = None
    append: str = ""
    memory_mb: int = 256
    cpus: int = 1
    accel: Literal["auto", "kvm", "tcg"] = "auto"

    def digest(self) -> str:
        """Everything here reaches the guest or qemu: any change needs a new qemu."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def tap(self) -> str:
        return "v-" + hashlib.sha256(self.name.encode()).hexdigest()[:12]

    @property
    def mac(self) -> str:
        """Stable per VM and address, locally administered (06:...; apps' MACs start 02:)."""
        h = hashlib.sha256(f"vm|{self.name}|{self.address}".encode()).digest()
        return "06:" + ":".join(f"{b:02x}" for b in h[:5])

    @property
    def marker(self) -> str:
        return f"nsg-vm-{self.name}"

    def cmdline(self) -> str:
        parts = ["console=ttyS0", "panic=-1", f"nsg.ip={self.address}", f"nsg.mtu={self.mtu}"]
        if self.gateway:
            parts.append(f"nsg.gw={self.gateway}")
        return " ".join([*parts, self.append] if self.append else parts)


def _opt(value: object) -> str:
    return str(value).replace(",", ",,")  # qemu option syntax: a literal comma is doubled


def qemu_argv(spec: VmSpec, kernel: Path, initrd: Path | None, console: Path, qemu: str = QEMU) -> list[str]:
    accel = {"kvm": ["-accel", "kvm"], "tcg": ["-accel", "tcg"], "auto": ["-accel", "kvm", "-accel", "tcg"]}
    argv = [qemu, "-name", f"guest={spec.marker}", *accel[spec.accel], "-machine", "pc", "-cpu", "max",
            "-smp", str(spec.cpus), "-m", str(spec.memory_mb), "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot",
            "-chardev", f"file,id=con0,path={_opt(console)},append=on", "-serial", "chardev:con0",
            "-netdev", f"tap,id=n0,ifname={_opt(spec.tap)},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={spec.mac},romfile=",
            "-kernel", str(kernel), "-append", spec.cmdline()]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    return argv


@dataclass
class VmRecord:
    """What we keep about a VM we started: enough to adopt it after a daemon restart."""

    name: str
    pid: int
    digest: str
    tap: str
    started: float
    restarts: int = 0


@dataclass(frozen=True)
class VmRunning:
    name: str
    state: str  # running, stopped
    pid: int
    restarts: int
    attached: bool  # its TAP is up on the bridge it should be on
    since: float | None = None


@dataclass
class VmResult:
    changes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _is_our_qemu(pid: int, marker: str) -> bool:
    """Is ``pid`` alive and the qemu we started for this VM (not a recycled pid, not a zombie)?"""
    if pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and f"guest={marker}".encode() in argv


def _wire(spec: VmSpec, create: bool) -> None:
    try:
        attach.wire_tap(spec.tap, spec.bridge, spec.mtu, create=create)
    except attach.AttachError as exc:
        raise VmError(f"vm {spec.name}: {exc}") from None


class Vms:
    def __init__(self, state_dir: Path, cache: Path | None = None, tls: TlsContext | None = None, qemu: str = QEMU):
        self.dir = state_dir
        self.cache = cache or state_dir / "images"
        self.tls = tls
        self.qemu = qemu
        self.children: dict[str, subprocess.Popen] = {}  # the qemus this process started (reaped by poll)

    # -- records -------------------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _load(self, name: str) -> VmRecord | None:
        try:
            return VmRecord(**json.loads(self._record_path(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, rec: VmRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._record_path(rec.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec)))
        tmp.replace(self._record_path(rec.name))

    def _records(self) -> dict[str, VmRecord]:
        out = {}
        for p in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else ():
            rec = self._load(p.stem)
            if rec is not None:
                out[rec.name] = rec
        return out

    def _alive(self, rec: VmRecord) -> bool:
        child = self.children.get(rec.name)
        if child is not None and child.pid == rec.pid and child.poll() is not None:
            del self.children[rec.name]  # reaped: it is gone
            return False
        return _is_our_qemu(rec.pid, f"nsg-vm-{rec.name}")

    # -- processes -----------------------------------------------------------------------------------

    def _start(self, spec: VmSpec, restarts: int) -> VmRecord:
        kernel = image_fetch.obtain(spec.kernel_url, spec.kernel_sha256, self.cache, self.tls)
        initrd = (image_fetch.obtain(spec.initrd_url, spec.initrd_sha256, self.cache, self.tls)
                  if spec.initrd_url and spec.initrd_sha256 else None)
        _wire(spec, create=True)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        console, log = self.dir / f"{spec.name}.console", self.dir / f"{spec.name}.log"
        console.unlink(missing_ok=True)
        argv = qemu_argv(spec, kernel, initrd, console, self.qemu)
        with open(log, "wb") as out:
            try:
                child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True)
            except OSError as exc:
                raise VmError(f"vm {spec.name}: cannot run {self.qemu}: {exc.strerror}") from None
        try:
            child.wait(timeout=0.3)  # qemu refuses bad options or a busy TAP at once
        except subprocess.TimeoutExpired:
            pass
        else:
            said = log.read_text(errors="replace").strip().splitlines()[-3:]
            attach.drop_tap(spec.tap)  # no VM on it: the TAP would outlive any record of it
            raise VmError(f"vm {spec.name}: qemu exited with {child.returncode}: {' | '.join(said)}")
        self.children[spec.name] = child
        rec = VmRecord(spec.name, child.pid, spec.digest(), spec.tap, time.time(), restarts)
        self._save(rec)
        return rec

    def _stop(self, rec: VmRecord) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE: only to the pid we recorded, and only while it is
        still our qemu for this VM."""
        marker = f"nsg-vm-{rec.name}"
        if _is_our_qemu(rec.pid, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while self._alive(rec) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive(rec):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
        child = self.children.pop(rec.name, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=2)

    # -- reconcile -----------------------------------------------------------------------------------

    def _trim_console(self, name: str) -> None:
        """A chatty guest must not fill the disk: beyond CONSOLE_MAX the log keeps only its tail (qemu
        appends with O_APPEND, so it writes on at the new end)."""
        path = self.dir / f"{name}.console"
        try:
            if path.stat().st_size <= CONSOLE_MAX:
                return
            with open(path, "r+b") as f:
                f.seek(-CONSOLE_KEEP, os.SEEK_END)
                tail = f.read()
                f.seek(0)
                f.truncate()
                f.write(b"[nsg: console log cut back]\n" + tail)
        except OSError:
            pass

    def actual(self, desired: Mapping[str, VmSpec]) -> dict[str, VmRunning]:
        out = {}
        for name, rec in self._records().items():
            self._trim_console(name)
            alive = self._alive(rec)
            spec = desired.get(name)
            attached = alive and spec is not None and attach.tap_state(spec.tap, spec.bridge, spec.mtu) == "ok"
            out[name] = VmRunning(name, "running" if alive else "stopped", rec.pid if alive else 0, rec.restarts,
                                  attached, rec.started if alive else None)
        return out

    def apply(self, desired: Mapping[str, VmSpec]) -> VmResult:
        result = VmResult()
        records = self._records()
        for name, rec in records.items():
            if name not in desired:
                self._stop(rec)
                attach.drop_tap(rec.tap)
                for suffix in (".json", ".console", ".log"):
                    (self.dir / f"{name}{suffix}").unlink(missing_ok=True)
                result.changes.append(f"remove vm {name}")
        for name, spec in desired.items():
            rec = records.get(name)
            try:
                if rec is not None and self._alive(rec):
                    if rec.digest != spec.digest():
                        self._stop(rec)
                        attach.drop_tap(rec.tap)
                        self._start(spec, rec.restarts)
                        result.changes.append(f"replace vm {name} (spec changed)")
                        continue
                    tap = attach.tap_state(spec.tap, spec.bridge, spec.mtu)
                    if tap == "detached":
                        _wire(spec, create=False)
                        result.changes.append(f"re-attach vm {name} to {spec.bridge}")
                    elif tap == "missing":  # qemu's fd points at a deleted device
                        self._stop(rec)
                        self._start(spec, rec.restarts + 1)
                        result.changes.append(f"restart vm {name} (its TAP was deleted)")
                    continue
                if rec is not None and time.time() < rec.started + backoff(rec.restarts):
                    result.errors[name] = f"vm {name} stopped; starting it again after a back-off"
                    continue
                self._start(spec, rec.restarts + 1 if rec is not None else 0)
                result.changes.append(f"restart vm {name} (it had stopped)" if rec else f"start vm {name}")
            except (VmError, ImageError, OSError) as exc:
                result.errors[name] = str(exc)
        image_fetch.prune(self.cache, {h for s in desired.values() for h in (s.kernel_sha256, s.initrd_sha256) if h})
        return result

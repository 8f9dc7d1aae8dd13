"""DHCP on an uplink: supervise busybox udhcpc and turn its events into leases."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import random
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from nsg.uplinks.lease import BOUND_EVENTS, LOST_EVENTS, Lease, LeaseError, lease_from_env
from nsg.uplinks.udhcpc_hook import PREFIX

log = logging.getLogger("nsg.uplinks.dhcp")

LeaseCallback = Callable[[str, Lease | None], None]
ErrorCallback = Callable[[str, str], None]


def parse_hook_line(line: str) -> tuple[str, dict[str, str]] | None:
    """Decode one stdout line of udhcpc; None for lines that are not ours."""
    if not line.startswith(PREFIX):
        return None
    try:
        doc = json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("env"), dict):
        return None
    env = {str(k): str(v) for k, v in doc["env"].items()}
    return str(doc.get("event", "")), env


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: if nsg dies (even by SIGKILL), udhcpc gets SIGTERM."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def write_hook(state_dir: Path) -> Path:
    path = state_dir / "udhcpc-hook"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m nsg.uplinks.udhcpc_hook "$@"\n')
    path.chmod(0o700)
    return path


class DhcpClient:
    """One udhcpc per DHCP uplink, restarted with backoff if it dies."""

    def __init__(self, uplink: str, interface: str, hook: Path, on_lease: LeaseCallback,
                 on_error: ErrorCallback):
        self.uplink = uplink
        self.interface = interface
        self.hook = hook
        self.on_lease = on_lease
        self.on_error = on_error
        self._task: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dhcp-{self.uplink}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._kill()

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def _run(self) -> None:
        busybox = shutil.which("busybox") or "/bin/busybox"
        backoff = 1.0
        while True:
            argv = [busybox, "udhcpc", "-f", "-i", self.interface, "-s", str(self.hook),
                    "-t", "3", "-T", "2", "-A", "3", "-O", "mtu"]
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                    stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent)
            except OSError as exc:
                self.on_error(self.uplink, f"cannot start udhcpc: {exc}")
            else:
                log.info("dhcp client started", extra={"fields": {"uplink": self.uplink, "pid": self._proc.pid}})
                assert self._proc.stdout is not None
                async for raw in self._proc.stdout:
                    self._line(raw.decode(errors="replace").rstrip("\n"))
                await self._proc.wait()
                self.on_error(self.uplink, f"udhcpc exited with status {self._proc.returncode}")
                self.on_lease(self.uplink, None)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 30.0)

    def _line(self, line: str) -> None:
        parsed = parse_hook_line(line)
        if parsed is None:
            return
        event, env = parsed
        if event in BOUND_EVENTS:
            try:
                lease = lease_from_env(env)
            except LeaseError as exc:
                self.on_error(self.uplink, f"DHCP server sent an unusable lease: {exc}")
                return
            self.on_lease(self.uplink, lease)
        elif event in LOST_EVENTS:
            self.on_lease(self.uplink, None)

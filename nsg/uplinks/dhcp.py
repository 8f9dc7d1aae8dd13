"""DHCP on an uplink: keep busybox udhcpc running and turn its events into leases.

The process and its hook protocol are bootstrap/udhcpc.py's (the DHCP bootstrap source runs the
same); what is the uplink's own: udhcpc's options, the restart policy, and the lease validation
(nsg/uplinks/lease.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from bootstrap.udhcpc import BOUND_EVENTS, LOST_EVENTS, HookEvent, Udhcpc, write_hook
from nsg.backoff import Backoff
from nsg.uplinks.lease import Lease, LeaseError, lease_from_env

__all__ = ["DhcpClient", "udhcpc_argv", "write_hook"]  # write_hook: the daemon puts the hook in its state dir

log = logging.getLogger("nsg.uplinks.dhcp")

LeaseCallback = Callable[[str, Lease | None], None]
ErrorCallback = Callable[[str, str], None]

# Tuning, not protocol: udhcpc's discover tries / pause between them / pause after a failed round,
# and the wait before restarting a udhcpc that died (jittered, doubling).
UDHCPC_DISCOVERS = 3
UDHCPC_PAUSE_S = 2
UDHCPC_FAIL_PAUSE_S = 3
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
RESTART_JITTER = 0.2


def udhcpc_argv(busybox: str, interface: str, hook: Path) -> list[str]:
    """udhcpc in the foreground for as long as the uplink is DHCP; option 26 (MTU) requested."""
    return [busybox, "udhcpc", "-f", "-i", interface, "-s", str(hook), "-t", str(UDHCPC_DISCOVERS),
            "-T", str(UDHCPC_PAUSE_S), "-A", str(UDHCPC_FAIL_PAUSE_S), "-O", "mtu"]


class DhcpClient:
    """One udhcpc per DHCP uplink, restarted with backoff if it dies."""

    def __init__(self, uplink: str, interface: str, hook: Path, on_lease: LeaseCallback,
                 on_error: ErrorCallback, *, busybox: str | None = None, backoff: Backoff | None = None):
        self.uplink = uplink
        self.interface = interface
        self.hook = hook
        self.on_lease = on_lease
        self.on_error = on_error
        self.busybox = busybox
        self.backoff = backoff or Backoff(RESTART_FIRST_S, RESTART_MAX_S, jitter=RESTART_JITTER)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dhcp-{self.uplink}")

    async def stop(self) -> None:
        """Cancelling the run stops udhcpc (the supervisor reaps it on the way out)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        busybox = self.busybox or shutil.which("busybox") or "/bin/busybox"
        while True:
            proc = Udhcpc(udhcpc_argv(busybox, self.interface, self.hook), on_event=self._event)
            try:
                pid = await proc.start()
            except OSError as exc:
                self.on_error(self.uplink, f"cannot start udhcpc: {exc}")
            else:
                log.info("dhcp client started", extra={"fields": {"uplink": self.uplink, "pid": pid}})
                done = await proc.run()
                said = f": {' / '.join(done.stderr)}" if done.stderr else ""
                self.on_error(self.uplink, f"udhcpc exited with status {done.returncode}{said}")
                self.on_lease(self.uplink, None)
            await asyncio.sleep(self.backoff.next())

    def _event(self, ev: HookEvent) -> None:
        if ev.event in BOUND_EVENTS:
            try:
                lease = lease_from_env(ev.env)
            except LeaseError as exc:
                self.on_error(self.uplink, f"DHCP server sent an unusable lease: {exc}")
                return
            self.on_lease(self.uplink, lease)
        elif ev.event in LOST_EVENTS:
            self.on_lease(self.uplink, None)

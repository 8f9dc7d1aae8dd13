"""systemd's service notifications (sd_notify(3)), without libsystemd: one datagram per message to
$NOTIFY_SOCKET. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

nsg.service is Type=notify with WatchdogSec: the daemon says READY=1 once it answers on its control
socket, then WATCHDOG=1 from its event loop every WatchdogSec/2, so a wedged loop gets restarted.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1"); False when not run by systemd or the socket is gone."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or addr[0] not in "/@":
        return False
    if addr[0] == "@":  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), addr)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd set for this process (seconds), or None."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


async def watchdog(interval: float) -> None:
    """WATCHDOG=1 every ``interval`` seconds for as long as the event loop runs it (cancel to stop)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)

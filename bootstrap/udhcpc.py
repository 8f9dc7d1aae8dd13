"""busybox udhcpc as nsg's DHCPv4 client: the hook protocol and the one supervisor of the process.

Two users, one way of running udhcpc:

* the DHCP bootstrap source (bootstrap/sources/dhcp.py) runs it once (``-q``) to read the
  options that name bootstrap servers;
* the gateway's DHCP uplinks (nsg/uplinks/dhcp.py) keep it running and restart it when it dies.

udhcpc configures nothing itself. On each event it runs the ``-s`` script, which reports the
event ($1) and the lease variables as one line on stdout:

    NSG-UDHCPC {"event": "bound", "env": {"ip": "198.18.5.10", "mask": "24", ...}}

JSON keeps whatever a DHCP server put in a string (newlines included) on that line. Everything
in ``env`` came off the network: the users validate it (nsg.uplinks.lease, bootstrap.sources.dhcp).

Never imports nsg, controller or lab (nsg imports this).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import shlex
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("bootstrap.udhcpc")

HOOK_PREFIX = "NSG-UDHCPC "
# The variables busybox udhcpc exports to its script that someone here reads; the rest stay out.
HOOK_KEYS = ("interface", "ip", "mask", "subnet", "router", "dns", "domain", "lease", "mtu", "serverid",
             "hostname", "opt43", "opt143")
# Events busybox udhcpc passes as $1 to its script.
BOUND_EVENTS = frozenset({"bound", "renew"})
LOST_EVENTS = frozenset({"deconfig", "leasefail", "nak"})

# Tuning, not protocol.
STDOUT_LIMIT = 1 << 20  # one hook line; RFC 3396 concatenated options make long ones
STDERR_TAIL = 3  # lines of udhcpc's own complaints kept for the error message
STOP_GRACE_S = 3.0  # SIGTERM, then this long, then SIGKILL


class HookEvent(NamedTuple):
    """One run of the hook script: udhcpc's event and the lease variables (strings, untrusted)."""

    event: str
    env: dict[str, str]


def parse_hook_line(line: str) -> HookEvent | None:
    """One stdout line of udhcpc; None for lines that are not from our hook."""
    if not line.startswith(HOOK_PREFIX):
        return None
    try:
        doc = json.loads(line[len(HOOK_PREFIX) :])
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str) or not isinstance(doc.get("env"), dict):
        return None
    return HookEvent(doc["event"], {str(k): str(v) for k, v in doc["env"].items() if k in HOOK_KEYS})


def hook_script(python: str = sys.executable) -> str:
    """The udhcpc ``-s`` script: report the event and the lease variables as one JSON line.
    Self-contained (``python -c``): it imports nothing of ours, so it runs whatever the cwd."""
    code = ("import json,os,sys;"
            f"k={json.dumps(list(HOOK_KEYS))};"
            f"e={{x:os.environ[x] for x in k if x in os.environ}};"
            f'sys.stdout.write({json.dumps(HOOK_PREFIX)}+json.dumps({{"event":(sys.argv[1:] or [""])[0],"env":e}})'
            '+"\\n");sys.stdout.flush()')
    return f"#!/bin/sh\nexec {shlex.quote(python)} -c {shlex.quote(code)} \"$@\"\n"


def write_hook(directory: Path, name: str = "udhcpc-hook") -> Path:
    """Write the hook script into ``directory`` (owner-only) and return its path."""
    path = directory / name
    path.write_text(hook_script())
    path.chmod(0o700)
    return path


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: if we die (even by SIGKILL), udhcpc gets SIGTERM."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class UdhcpcExit:
    """How one udhcpc run ended: its exit status, every hook event in order, its last stderr lines."""

    returncode: int | None
    events: tuple[HookEvent, ...]
    stderr: tuple[str, ...] = ()


EventCallback = Callable[[HookEvent], None]


class Udhcpc:
    """One busybox udhcpc process: started so that it dies with us, its hook events handed to
    ``on_event`` as they come, always reaped (also when the caller is cancelled or times out).

    Restarting is the caller's business (a lease source runs it once, an uplink keeps it alive)."""

    def __init__(self, argv: Sequence[str], on_event: EventCallback | None = None) -> None:
        self.argv = list(argv)
        self.on_event = on_event
        self._proc: asyncio.subprocess.Process | None = None
        self._events: list[HookEvent] = []
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> int:
        """Spawn udhcpc; OSError if it cannot be started. Returns its pid."""
        assert self._proc is None, "one process per Udhcpc"
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=STDOUT_LIMIT, preexec_fn=_die_with_parent)
        return self._proc.pid

    async def run(self, timeout: float | None = None) -> UdhcpcExit:
        """Start (unless started) and follow udhcpc until it exits. TimeoutError after ``timeout``
        seconds; udhcpc is stopped whenever this returns or raises."""
        if self._proc is None:
            await self.start()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(self._read_stdout(), self._read_stderr())
                returncode = await self._proc.wait()
        finally:
            await self.stop()
        return UdhcpcExit(returncode, tuple(self._events), tuple(self._stderr))

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; a no-op once it has exited."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in _lines(self._proc.stdout):
            ev = parse_hook_line(line)
            if ev is None:
                continue
            self._events.append(ev)
            if self.on_event is not None:
                self.on_event(ev)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for line in _lines(self._proc.stderr):
            if line.strip():
                self._stderr.append(line.strip())


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Decoded lines until EOF; a line over STDOUT_LIMIT is not one our hook wrote: skipped."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:
            log.warning("udhcpc wrote a line of more than %d octets; skipped", STDOUT_LIMIT)
            continue
        if not raw:
            return
        yield raw.decode(errors="replace").rstrip("\n")

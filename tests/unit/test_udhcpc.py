"""The one udhcpc supervisor and hook protocol (bootstrap/udhcpc.py) that the DHCP bootstrap source
and the gateway's DHCP uplinks share: hook lines, the real hook script, and the supervisor against a
fake busybox that runs the hook the way udhcpc does (no network, no root)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from bootstrap import udhcpc
from bootstrap.udhcpc import HOOK_PREFIX, HookEvent, Udhcpc, hook_script, parse_hook_line, write_hook

# A stand-in for "busybox udhcpc ... -s HOOK ...": runs the hook with udhcpc's variables, says
# something on stderr and on stdout (not ours), then does what $FAKE_END says.
FAKE_BUSYBOX = """#!/bin/sh
hook=""
while [ $# -gt 0 ]; do
    if [ "$1" = "-s" ]; then hook="$2"; fi
    shift
done
echo "udhcpc: started, v1.36.1" >&2
interface=wan0 "$hook" deconfig
echo "udhcpc: broadcasting discover"
interface=wan0 ip=198.18.5.10 mask=24 router=198.18.5.1 mtu=1400 lease=3600 secret=x "$hook" bound
echo "udhcpc: no lease, failing" >&2
case "$FAKE_END" in
    hang) exec sleep 60 ;;
    stubborn) trap "" TERM; while :; do sleep 0.2; done ;;
    *) exit 1 ;;
esac
"""


def fake_busybox(tmp_path: Path) -> Path:
    path = tmp_path / "busybox"
    path.write_text(FAKE_BUSYBOX)
    path.chmod(0o700)
    return path


def argv(tmp_path: Path) -> list[str]:
    return [str(fake_busybox(tmp_path)), "udhcpc", "-f", "-i", "wan0", "-s", str(write_hook(tmp_path))]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_hook_lines():
    line = HOOK_PREFIX + json.dumps({"event": "bound", "env": {"ip": "198.18.5.10", "junk": "x"}})
    assert parse_hook_line(line) == ("bound", {"ip": "198.18.5.10"})  # keys outside HOOK_KEYS dropped
    assert parse_hook_line(line).event == "bound"
    assert parse_hook_line("udhcpc: started") is None
    assert parse_hook_line(HOOK_PREFIX + "{not json") is None
    assert parse_hook_line(HOOK_PREFIX + "[1]") is None
    assert parse_hook_line(HOOK_PREFIX + '{"event": 1, "env": {}}') is None
    assert parse_hook_line(HOOK_PREFIX + '{"event": "bound", "env": []}') is None
    assert parse_hook_line(HOOK_PREFIX + '{"event": "bound", "env": {"mtu": 1400}}') == ("bound", {"mtu": "1400"})


def test_hook_script_reports_one_json_line(tmp_path):
    """The real script, run the way udhcpc runs it; a newline a server smuggles into a
    string stays inside the JSON line; variables nobody reads stay out."""
    hook = write_hook(tmp_path)
    assert hook.read_text() == hook_script() and oct(hook.stat().st_mode & 0o777) == "0o700"
    env = {"PATH": os.environ.get("PATH", ""), "ip": "198.18.5.10", "domain": "x\n" + HOOK_PREFIX + "{}",
           "opt143": "0011", "mtu": "1400", "secret": "not reported"}
    out = subprocess.run([str(hook), "bound"], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 1
    event, got = parse_hook_line(lines[0])
    assert event == "bound" and got == {k: env[k] for k in ("ip", "domain", "opt143", "mtu")}


def test_supervisor_reports_events_in_order_and_the_exit(tmp_path):
    seen: list[HookEvent] = []
    done = asyncio.run(Udhcpc(argv(tmp_path), on_event=seen.append).run(timeout=20))
    assert [e.event for e in seen] == ["deconfig", "bound"] and list(done.events) == seen
    assert seen[1].env == {"interface": "wan0", "ip": "198.18.5.10", "mask": "24", "router": "198.18.5.1",
                           "mtu": "1400", "lease": "3600"}
    assert done.returncode == 1
    assert done.stderr == ("udhcpc: started, v1.36.1", "udhcpc: no lease, failing")


def test_supervisor_cannot_start_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        asyncio.run(Udhcpc([str(tmp_path / "no-busybox"), "udhcpc"]).run())


def test_timeout_stops_udhcpc(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_END", "hang")
    proc = Udhcpc(argv(tmp_path))
    with pytest.raises(TimeoutError):
        asyncio.run(proc.run(timeout=2))
    assert proc.pid is not None and gone(proc.pid)


def test_cancel_stops_udhcpc_and_sigkill_follows_a_deaf_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_END", "stubborn")
    monkeypatch.setattr(udhcpc, "STOP_GRACE_S", 0.3)
    seen: list[HookEvent] = []
    proc = Udhcpc(argv(tmp_path), on_event=seen.append)

    async def main():
        task = asyncio.create_task(proc.run())
        for _ in range(500):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(seen) == 2 and gone(proc.pid)

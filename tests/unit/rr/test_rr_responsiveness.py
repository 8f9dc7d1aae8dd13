"""The reflector stays responsive under a flood and a big catch-up: it runs as its own process
(``nsg-controller route-reflector --owners``, as beside the hub), clients are bare peers on loopback.

1. One client floods 50,000 type-2 routes with the default limits: it is cut at its limit (Cease,
   Maximum Number of Prefixes) and its memory stays bounded; meanwhile a watcher's session stays up
   and a third client's routes reach the watcher in a median under 100 ms (each within 1 s).
2. With the limit raised, 50,000 routes are taken (100 to an UPDATE); then a client (re)connects and is caught up
   with all of them: the catch-up yields to the other sessions, the third client's routes still reach
   the watcher as fast, and the newcomer's End-of-RIB comes after the last caught-up route.

Latencies, the catch-up time and the reflector's RSS are printed (pytest -s)."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bgp.codec import Update
from bgp.constants import CeaseSubcode, ErrorCode, MessageType
from tests.unit.rr.rawpeer import RawPeer, count_flood_routes, mac_flood, packed_flood, until

ASN = 65000
RR_ID = "198.19.255.254"
F, W, T, C = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"  # flooder, watcher, third, newcomer
FLOOD = 50_000
# A third client's route reaches the watcher in a median of 10-25 ms here; the slowest of ~10 probes
# has been 100-215 ms on a 2-core machine also running a qemu TCG guest. The bound that matters is
# far below the 3 s hold time (before, a catch-up blocked the loop for over 7 s and expired a session):
# the median shows the loop yields, the max that no probe waits anywhere near a hold time.
MEDIAN_BOUND = 0.100
LATENCY_BOUND = 1.0
EOR = Update.withdraw_evpn(()).encode()


def start_rr(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    owners = tmp_path / "owners.json"
    owners.write_text(json.dumps({"asn": ASN, "clients": {ip: {"vnis": [100]} for ip in (F, W, T, C)}}))
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "route-reflector", "--listen", "127.0.0.1:0",
                             "--asn", str(ASN), "--router-id", RR_ID, "--owners", str(owners), "--hold-time", "3",
                             "--log-level", "warning", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"reflector did not start: {line}{proc.stderr.read()}")
    return proc, int(line.rsplit(":", 1)[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def probe(third: RawPeer, watcher: RawPeer, stop: asyncio.Event, every: float) -> list[float]:
    """The third client announces a route every ``every`` s; how long each took to reach the watcher."""
    sent: list[tuple[float, bytes]] = []
    i = 0
    while not stop.is_set():
        (frame,) = mac_flood(T, 1, first=i, prefix=b"\x02\xbb")
        sent.append((time.monotonic(), b"\x02\xbb" + i.to_bytes(4, "big")))
        third.send(frame)
        i += 1
        await asyncio.sleep(every)
    await asyncio.sleep(0.5)
    arrivals = {}
    for at, frame in watcher.frames:
        if frame[18] == MessageType.UPDATE and b"\x02\xbb" in frame:
            for _, mac in sent:
                if mac in frame and mac not in arrivals:
                    arrivals[mac] = at
    missing = [mac.hex() for _, mac in sent if mac not in arrivals]
    assert not missing, f"probe routes never reached the watcher: {missing}"
    return [arrivals[mac] - t0 for t0, mac in sent]


def keepalive_gap(peer: RawPeer, since: float) -> float:
    times = [since, *[t for t in peer.keepalive_times() if t >= since], time.monotonic()]
    return max(b - a for a, b in itertools.pairwise(times))


def summary(name: str, lat: list[float]) -> str:
    return (f"{name}: {len(lat)} probes, median {statistics.median(lat) * 1000:.1f} ms, "
            f"max {max(lat) * 1000:.1f} ms")


def test_a_flood_is_capped_and_the_other_sessions_go_on(tmp_path):
    proc, port = start_rr(tmp_path)

    async def main():
        peers = []
        try:
            watcher = await RawPeer(port, W, hold=3).connect()
            third = await RawPeer(port, T, hold=3).connect()
            flooder = await RawPeer(port, F, hold=3).connect()
            peers += [watcher, third, flooder]
            for p in peers:
                await asyncio.wait_for(p.opened.wait(), 5)
            rss0, t0 = rss_kb(proc.pid), time.monotonic()
            stop = asyncio.Event()
            prober = asyncio.get_running_loop().create_task(probe(third, watcher, stop, 0.05))
            for frame in mac_flood(F, FLOOD):
                flooder.send(frame)
            await asyncio.wait_for(flooder.closed.wait(), 30)
            cut = time.monotonic() - t0
            rss1 = rss_kb(proc.pid)
            await asyncio.sleep(0.5)
            stop.set()
            lat = await prober
            assert flooder.notifications[0][:2] == (ErrorCode.CEASE, CeaseSubcode.MAX_PREFIXES)
            assert not watcher.closed.is_set() and watcher.notifications == []
            assert keepalive_gap(watcher, t0) < 3.0  # its hold time: the session never came near expiring
            print(f"\nflood of {FLOOD}: cut at its limit after {cut:.2f} s; reflector RSS {rss0 // 1024} -> "
                  f"{rss1 // 1024} MB; {summary('third client -> watcher', lat)}; "
                  f"longest keepalive gap at the watcher {keepalive_gap(watcher, t0):.2f} s")
            assert statistics.median(lat) < MEDIAN_BOUND and max(lat) < LATENCY_BOUND, summary("latency", lat)
            assert rss1 - rss0 < 40 * 1024, f"RSS grew {rss0} -> {rss1} kB"
        finally:
            for p in peers:
                await p.close()

    try:
        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(5)


def test_catch_up_of_a_big_table_does_not_hold_up_the_others(tmp_path):
    proc, port = start_rr(tmp_path, "--max-routes", "60000", "--rate", "1000000")

    async def main():
        peers = []
        try:
            watcher = await RawPeer(port, W, hold=3).connect()
            third = await RawPeer(port, T, hold=3).connect()
            flooder = await RawPeer(port, F, hold=3).connect()
            peers += [watcher, third, flooder]
            for p in peers:
                await asyncio.wait_for(p.opened.wait(), 5)
            rss0, t0 = rss_kb(proc.pid), time.monotonic()
            for frame in packed_flood(F, FLOOD):  # 100 routes an UPDATE: the table fills faster
                flooder.send(frame)
            await until(lambda: sum(count_flood_routes(f) for _, f in watcher.frames) >= FLOOD, timeout=60,
                        what="the whole flood reflected to the watcher")
            taken = time.monotonic() - t0
            rss1 = rss_kb(proc.pid)
            newcomer = await RawPeer(port, C, hold=3).connect()
            peers.append(newcomer)
            t1 = time.monotonic()
            stop = asyncio.Event()
            prober = asyncio.get_running_loop().create_task(probe(third, watcher, stop, 0.02))
            await asyncio.wait_for(newcomer.opened.wait(), 5)
            await until(lambda: any(f == EOR for _, f in newcomer.frames), timeout=60, what="the newcomer's End-of-RIB")
            caught_up = time.monotonic() - t1
            stop.set()
            lat = await prober
            frames = [f for _, f in newcomer.frames if f[18] == MessageType.UPDATE]
            flood_at = [i for i, f in enumerate(frames) if b"\x02\xaa" in f]
            assert len(flood_at) == FLOOD and frames.index(EOR) > max(flood_at)
            for p in (watcher, flooder, newcomer):
                assert not p.closed.is_set() and p.notifications == []
                assert keepalive_gap(p, t1) < 3.0
            print(f"\n{FLOOD} routes taken and reflected in {taken:.2f} s, reflector RSS {rss0 // 1024} -> "
                  f"{rss1 // 1024} MB; newcomer caught up in {caught_up:.2f} s; "
                  f"{summary('third client -> watcher during the catch-up', lat)}")
            assert statistics.median(lat) < MEDIAN_BOUND and max(lat) < LATENCY_BOUND, summary("latency", lat)
        finally:
            for p in peers:
                await p.close()

    try:
        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(5)

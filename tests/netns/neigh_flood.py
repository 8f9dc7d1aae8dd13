"""What a flood of remote EVPN entries costs the gateway that installs them (issue 23, victim side),
in a network namespace: the neighbour watch (nsg/evpn/watch.py) runs while the netlink adapter
installs, for each of ``--macs`` remote MACs, what nsg installs for a MAC+IP route (an extern_learn
bridge entry on the VXLAN port, the VXLAN device's own entry with the remote VTEP, a permanent
neighbour on the bridge), and while hosts on the LAN port keep appearing. Then the two full reads
of the kernel, the watch's resync and the dataplane snapshot, are measured alone (each in its own
process: resident-set high-water mark since the operation started, and tracemalloc's peak).

    ip netns exec NS .venv/bin/python -m tests.netns.neigh_flood ROLE ...   (the roles, below)
    .venv/bin/python -m tests.netns.neigh_flood --macs 20000             (makes and removes NS)

Prints one JSON object. tests/netns/test_neigh_watch_flood.py checks its verdicts."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable

LOCAL_PREFIX = "02:aa"  # hosts on the LAN port (local learning)
REMOTE_PREFIX = "02:cc"  # what EVPN installs for the flooding site


def remote_mac(i: int) -> str:
    return f"{REMOTE_PREFIX}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:00"


def local_mac(i: int) -> str:
    return f"{LOCAL_PREFIX}:00:00:{(i >> 8) & 255:02x}:{i & 255:02x}"


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return 0


def measured(fn: Callable[[], object], trace: bool) -> dict:
    """kB the resident set grew to above where it was (the high-water mark is reset first: Linux
    clear_refs 5), or tracemalloc's peak in kB (a second run: tracing costs memory itself)."""
    import gc

    gc.collect()
    if trace:
        tracemalloc.start()
        t0 = time.monotonic()
        out = fn()
        ms = (time.monotonic() - t0) * 1000
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"tracemalloc_peak_kb": peak // 1024, "ms_traced": round(ms), "result": out}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS")
    t0 = time.monotonic()
    out = fn()
    ms = (time.monotonic() - t0) * 1000
    return {"hwm_growth_kb": _status("VmHWM") - base, "ms": round(ms), "result": out}


# --- roles (inside the namespace) -----------------------------------------------------------------


def role_watch_flood(macs: int, local: int) -> dict:
    """The watch runs while this process installs the flood (same process, as in the daemon: the
    reconciler's worker thread and the watch's thread share the interpreter) and a sender makes
    ``local`` hosts appear on the LAN port meanwhile."""
    from nsg.dataplane.netlink import NetlinkAdapter
    from nsg.dataplane.types import AddFdb, AddNeigh, Fdb, Neigh
    from nsg.evpn.local import MacEvent
    from nsg.evpn.watch import NeighWatch

    seen_event: set[str] = set()
    seen_resync: set[str] = set()
    gone: set[str] = set()
    remote_reported = 0
    lock = threading.Lock()

    def deliver(vnis, events) -> None:
        nonlocal remote_reported
        with lock:
            for e in events:
                if isinstance(e, MacEvent) and e.mac.startswith(LOCAL_PREFIX):
                    if e.present:
                        (seen_event if vnis is None else seen_resync).add(e.mac)
                    elif vnis is None:
                        gone.add(e.mac)
                elif getattr(e, "mac", "").startswith(REMOTE_PREFIX):
                    remote_reported += 1

    w = NeighWatch(deliver)
    w.set_bridges({"br-100": 100})
    time.sleep(0.5)
    ops: list = []
    for i in range(macs):
        m = remote_mac(i)
        ops += [AddFdb(Fdb("vx-100", m, "", master=True)), AddFdb(Fdb("vx-100", m, f"198.18.{1 + i % 200}.1")),
                AddNeigh(Neigh("br-100", f"198.19.{i >> 8 & 255}.{i & 255}", m))]
    kernel = NetlinkAdapter()
    kernel.snapshot()  # the interface indexes
    sender = subprocess.Popen([sys.executable, "-m", "tests.netns.neigh_flood", "send", "--local", str(local)],
                              stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None and sender.stdout.readline().strip() == "sending"
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS")
    t0 = time.monotonic()
    kernel.apply_many(ops)
    install_s = time.monotonic() - t0
    sender.wait(timeout=60)
    deadline = time.monotonic() + 10
    want = {local_mac(i) for i in range(local)}
    while time.monotonic() < deadline:
        with lock:
            if want <= seen_event | seen_resync:
                break
        time.sleep(0.05)
    hwm = _status("VmHWM") - base
    removed = {local_mac(i) for i in range(min(5, local))}  # hosts that go: their entries are deleted
    for mac in removed:
        subprocess.run(["bridge", "fdb", "del", mac, "dev", "lan0", "master"], check=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not removed <= gone:
        time.sleep(0.05)
    time.sleep(0.3)
    w.stop()
    kernel.close()
    return {"install_s": round(install_s, 2), "ops": len(ops), "counters": w.counters,
            "local_as_events": len(seen_event & want), "local_only_by_resync": len((seen_resync - seen_event) & want),
            "local_missing": len(want - seen_event - seen_resync), "remote_reported": remote_reported,
            "deletes_reported": len(removed & gone), "deletes": len(removed), "watch_process_hwm_growth_kb": hwm}


def role_send(local: int) -> dict:
    """``local`` new hosts on the LAN port, one every 5 ms, from "sending" on (the flood starts then)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("lanp", 0))
    print("sending", flush=True)
    for i in range(local):
        s.send(b"\xff" * 6 + bytes.fromhex(local_mac(i).replace(":", "")) + b"\x88\xb5" + bytes(46))
        time.sleep(0.005)
    return {"sent_s": round(local * 0.005, 2)}


def role_full(trace: bool) -> dict:
    """The watch's full read (what it does at start and after an overflow)."""
    from nsg.dataplane.netlink import NeighEvents
    from nsg.evpn.watch import RCVBUF, NeighWatch

    got: list[int] = []
    w = NeighWatch(lambda vnis, events: got.append(len(events)))
    w._bridges = {"br-100": 100}
    with NeighEvents(RCVBUF) as nl:
        res = measured(lambda: w._full(nl), trace)
    res["result"] = {"events": got[0] if got else None}
    return res


def role_snapshot(trace: bool) -> dict:
    from nsg.dataplane.netlink import NetlinkAdapter

    kernel = NetlinkAdapter()

    def snap() -> dict:
        s = kernel.snapshot()
        return {"fdb": len(s.fdb), "neighbors": len(s.neighbors)}

    res = measured(snap, trace)
    kernel.close()
    return res


def role_resync(trace: bool, macs: int) -> dict:
    """The dataplane's full pass as the periodic resync runs it: snapshot, then plan against a desired
    state that already holds the same entries (as the daemon does: its own objects)."""
    from nsg.dataplane.netlink import NetlinkAdapter
    from nsg.dataplane.planner import plan
    from nsg.dataplane.types import Addr, Desired, Fdb, LinkSpec, Neigh

    kernel = NetlinkAdapter()
    have = kernel.snapshot()
    links = tuple(LinkSpec(n, k.kind, k.mtu, k.master, None, k.vxlan, k.port_flags)  # type: ignore[arg-type]
                  for n, k in sorted(have.links.items()) if k.owned)
    fdb = frozenset(f for i in range(macs) for f in (Fdb("vx-100", remote_mac(i), "", master=True),
                                                    Fdb("vx-100", remote_mac(i), f"198.18.{1 + i % 200}.1")))
    neigh = frozenset(Neigh("br-100", f"198.19.{i >> 8 & 255}.{i & 255}", remote_mac(i)) for i in range(macs))
    desired = Desired(links=links, ports={"lan0": "br-100"}, addrs=frozenset({Addr("br-100", "198.19.0.1/16")}),
                      fdb=fdb, neighbors=neigh)
    del have

    def full_pass() -> dict:
        p = plan(desired, kernel.snapshot())
        return {"ops": [str(op) for op in p.ops][:5], "waiting": len(p.waiting)}

    res = measured(full_pass, trace)
    kernel.close()
    return res


# --- orchestration (host side) --------------------------------------------------------------------


def setup(ns: str) -> None:
    def ip(*a: str) -> None:
        subprocess.run(["ip", "-n", ns, *a], check=True)

    ip("link", "add", "br-100", "type", "bridge")
    ip("link", "add", "vx-100", "type", "vxlan", "id", "100", "local", "198.19.255.1", "dstport", "4789",
       "nolearning")
    ip("link", "set", "vx-100", "master", "br-100")
    ip("link", "add", "lan0", "type", "veth", "peer", "name", "lanp")
    ip("link", "set", "lan0", "master", "br-100")
    ip("addr", "add", "198.19.0.1/16", "dev", "br-100")
    for dev in ("br-100", "vx-100"):
        ip("link", "set", dev, "alias", "nsg")  # nsg's own: what the snapshot reads the entries of
    for dev in ("br-100", "vx-100", "lan0", "lanp"):
        ip("link", "set", dev, "up")


def in_ns(ns: str, *args: str, timeout: float = 300) -> dict:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netns.neigh_flood", *args],
                         capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_all(ns: str, macs: int, local: int) -> dict:
    setup(ns)
    res: dict = {"macs": macs, "flood": in_ns(ns, "watch-flood", "--macs", str(macs), "--local", str(local))}
    for role in ("full", "snapshot", "resync"):
        res[role] = {**in_ns(ns, role, "--macs", str(macs)), **in_ns(ns, role, "--trace", "--macs", str(macs))}
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", nargs="?", default="all",
                   choices=["all", "watch-flood", "send", "full", "snapshot", "resync"])
    p.add_argument("--macs", type=int, default=20000)
    p.add_argument("--local", type=int, default=100)
    p.add_argument("--trace", action="store_true")
    a = p.parse_args()
    if a.role == "all":
        from lab import netns

        ns = f"nflood{os.getpid()}"
        netns.add_namespace(ns)
        try:
            out = run_all(ns, a.macs, a.local)
        finally:
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)
    elif a.role == "watch-flood":
        out = role_watch_flood(a.macs, a.local)
    elif a.role == "send":
        out = role_send(a.local)
    elif a.role == "full":
        out = role_full(a.trace)
    elif a.role == "snapshot":
        out = role_snapshot(a.trace)
    else:
        out = role_resync(a.trace, a.macs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""A route flood through the gateway's EVPN core, compose and the engine on the fake kernel: what a
member box announcing tens of thousands of type-2 routes through the reflector costs every other
gateway. No root, no sockets; prints one JSON object.

    .venv/bin/python -m tests.unit.evpn_routes.flood_bench [--routes 50000] [--per-update 60]

The gateway: one subnet (VNI 100), transport "esp", peers "b1" (the flooding site) and "b2"; its
BGP peers are two reflectors, RR1 (carrying the flood) and RR2. The daemon's main loop is modelled
as it runs (nsg/daemon.py): UPDATEs are handed to the core as a session reads them (``reads`` of
them per socket read, then the loop runs other tasks), every "the kernel view changed" wakes the
loop, which composes (nsg.compose) with the core's view and sets the engine (the dataplane
subsystem on the real reconciler over nsg.dataplane.fake.FakeKernel, in a worker thread as in the
daemon); events that arrive meanwhile are coalesced into the next pass.

Measured:
- ``flood_s``: from the first UPDATE until every flood route is in the fake kernel (or, with the
  bounds, until the last one the core takes is); ``converges``: engine passes in that time;
- ``legit_to_fdb_ms`` / ``legit_to_kernel_ms``: a new MAC from b2 through RR2, delivered halfway
  through the flood, until the core's fdb() holds it and until the fake kernel does;
- ``resync_compose_ms`` / ``resync_engine_ms``: one 30 s resync afterwards with nothing changed
  (compose with the core's view; the engine with the parts that read the kernel forced, as the
  daemon's RESYNC_FORCE), and ``view_ms``: the view alone;
- with ``--memory``, tracemalloc's peak and what stays allocated after the flood (a separate run:
  tracemalloc slows everything down).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import time
import tracemalloc

from bgp.codec import Update, UpdateResult
from bgp.constants import ErrorAction
from bgp.evpn_nlri import RouteDistinguisher, encap_vxlan, mac_ip_route, route_target
from nsg.compose import EvpnView, compose
from nsg.dataplane.desired import ESP_TUN
from nsg.dataplane.fake import FakeKernel
from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import Fdb, LinkState, Snapshot
from nsg.engine import Engine
from nsg.evpn.rib import EvpnRib
from nsg.evpn.routes import EvpnRoutes
from nsg.model import ConfigError, parse_config
from nsg.subsystems import DataplaneSubsystem

SYSIP, B1, B2 = "198.19.255.10", "198.19.255.1", "198.19.255.2"
RR1, RR2 = "198.19.255.254", "198.19.255.253"
VNI, ASN = 100, 65000
LEGIT = "02:00:00:00:b2:01"


def config(limits: bool = True):
    evpn = {"asn": ASN, "peers": [{"address": RR1, "asn": ASN}, {"address": RR2, "asn": ASN}]}
    if not limits:  # the defaults (20,000 per peer, 10,000 per site) would refuse most of the flood
        evpn.update(max_routes_per_peer=10_000_000, max_routes_per_site=10_000_000)
    return parse_config({
        "schema_version": 1, "system_ip": SYSIP, "transport": "esp", "ipsec": {"auth": "psk"},
        "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                     "gateway": "198.18.1.1"}],
        "subnets": [{"name": "corp", "vni": VNI, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                     "ports": ["lan0"]}],
        "peers": [{"name": n, "system_ip": ip, "endpoint": f"198.18.{i}.2", "psk": f"{n}-" + "x" * 32}
                  for i, (n, ip) in enumerate((("b1", B1), ("b2", B2), ("hub", RR1)), start=2)],
        "evpn": evpn})


def kernel() -> FakeKernel:
    links = {"lo": LinkState("lo", 1, None, 65536, True)}
    for i, name in enumerate(("wan0", "lan0"), start=2):
        links[name] = LinkState(name, i, "veth", 1500, True)
    links[ESP_TUN] = LinkState(ESP_TUN, 4, "tun", 1400, True)  # the ESP engine's (it makes it before)
    return FakeKernel(Snapshot(links=links))


def flood_updates(n: int, per: int) -> list[UpdateResult]:
    """b1's flood as the reflector sends it: MAC-only type-2 routes, ``per`` to an UPDATE."""
    rd = RouteDistinguisher.ipv4(B1, VNI)
    macs = [f"02:66:{(i >> 24) & 0xFF:02x}:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
            for i in range(1, n + 1)]
    comms = (route_target(ASN, VNI), encap_vxlan())
    return [UpdateResult(ErrorAction.NONE, update=Update.for_evpn(
        tuple(mac_ip_route(rd, m, None, VNI) for m in macs[i:i + per]), B1, comms))
        for i in range(0, n, per)]


def legit_update() -> UpdateResult:
    route = mac_ip_route(RouteDistinguisher.ipv4(B2, VNI), LEGIT, None, VNI)
    return UpdateResult(ErrorAction.NONE, update=Update.for_evpn((route,), B2, (route_target(ASN, VNI),
                                                                              encap_vxlan())))


class Gateway:
    """The core, compose and the engine, wired like the daemon's main loop (nsg/daemon.py)."""

    def __init__(self, limits: bool = True) -> None:
        try:
            self.cfg = config(limits)
        except ConfigError:  # a tree without the route limits in its config model (the "before" runs)
            self.cfg = config(True)
        self.core = EvpnRoutes(EvpnRib())
        self._now = "now" in inspect.signature(self.core.received).parameters
        self._call(self.core.configure, self.cfg)
        self.kernel = kernel()
        self.dp = DataplaneSubsystem(Reconciler(self.kernel))
        self.engine = Engine([self.dp])
        self.wake = asyncio.Event()
        self.converges = 0
        self.busy = False  # an engine pass runs

    def _call(self, fn, *args):
        return fn(*args, now=time.monotonic()) if "now" in inspect.signature(fn).parameters else fn(*args)

    def received(self, peer: str, res: UpdateResult) -> None:
        eff = self._call(self.core.received, peer, res)
        if eff.changed:
            self.wake.set()

    def view(self) -> EvpnView:
        devices = getattr(self.core, "devices", None)  # as nsg/subsystems/evpn.py is to pass it
        if devices is None:
            return EvpnView(self.core.fdb(), self.core.neighbors(), self.core.routes())
        return EvpnView(self.core.fdb(), self.core.neighbors(), self.core.routes(), devices=devices)

    async def converge(self, force: frozenset[str] = frozenset()) -> None:
        state = compose(self.cfg, {}, self.view())
        res = await self.engine.set(state, force)
        assert res.ok, res.error
        self.kernel.applied.clear()  # the fake's log of operations: not the gateway's memory
        self.converges += 1

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.create_task(self.wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self.wake.is_set():
                self.wake.clear()
                self.busy = True
                try:
                    await self.converge()
                finally:
                    self.busy = False

    def installed(self, fdb: Fdb) -> bool:
        """In the kernel: the dataplane took a Desired holding it (the fake kernel itself is being
        changed in the worker thread)."""
        return self.dp.last is not None and fdb in self.dp.last.fdb


async def scenario(n: int, per: int, reads: int, limits: bool) -> dict:
    gw = Gateway(limits)
    await gw.converge()
    updates = flood_updates(n, per)
    stop = asyncio.Event()
    loop_task = asyncio.create_task(gw.loop(stop))
    legit: dict[str, float] = {}

    async def deliver_legit() -> None:
        t0 = time.perf_counter()
        gw.received(RR2, legit_update())
        if Fdb(f"vx-{VNI}", LEGIT, B2) in gw.core.fdb():
            legit["fdb"] = time.perf_counter() - t0
        while not gw.installed(Fdb(f"vx-{VNI}", LEGIT, B2)):
            await asyncio.sleep(0.0005)
        legit["kernel"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    legit_task = None
    for i in range(0, len(updates), reads):
        for res in updates[i:i + reads]:
            gw.received(RR1, res)
        if legit_task is None and i >= len(updates) // 2:
            legit_task = asyncio.create_task(deliver_legit())
        await asyncio.sleep(0)  # the loop runs the other tasks between two socket reads
    while gw.wake.is_set() or gw.busy:  # the last pass composed after the last UPDATE
        await asyncio.sleep(0.001)
    taken = {f.mac for f in gw.core.fdb() if not f.master and f.dst == B1}
    assert {f.mac for f in gw.kernel.fdb if not f.master and f.dst == B1} == taken
    flood_s = time.perf_counter() - t0
    if legit_task is not None:
        await legit_task
    stop.set()
    await loop_task
    # one resync with nothing changed: the view, compose, then the engine with the kernel parts forced
    t1 = time.perf_counter()
    gw.view()
    view_ms = (time.perf_counter() - t1) * 1000
    t1 = time.perf_counter()
    state = compose(gw.cfg, {}, gw.view())
    compose_ms = (time.perf_counter() - t1) * 1000
    t1 = time.perf_counter()
    await gw.engine.set(state, frozenset({"dataplane"}))
    engine_ms = (time.perf_counter() - t1) * 1000
    t1 = time.perf_counter()
    again = compose(gw.cfg, {}, gw.view())
    await gw.engine.set(again)
    unforced_ms = (time.perf_counter() - t1) * 1000
    return {"routes": n, "per_update": per, "taken": len(taken), "flood_s": round(flood_s, 3),
            "converges": gw.converges, "legit_to_fdb_ms": round(legit.get("fdb", float("nan")) * 1000, 2),
            "legit_to_kernel_ms": round(legit.get("kernel", float("nan")) * 1000, 2),
            "resync_view_ms": round(view_ms, 2), "resync_compose_ms": round(compose_ms, 2),
            "resync_engine_forced_ms": round(engine_ms, 2), "resync_unforced_ms": round(unforced_ms, 2)}


def memory(n: int, per: int, limits: bool) -> dict:
    """tracemalloc peak while the core takes the flood and composes once, and what stays allocated
    in the core afterwards (per route)."""
    updates = flood_updates(n, per)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    gw = Gateway(limits)
    for res in updates:
        gw.received(RR1, res)
    core_now = tracemalloc.get_traced_memory()[0] - base
    taken = sum(1 for f in gw.core.fdb() if not f.master and f.dst == B1)
    asyncio.run(gw.converge())
    state = compose(gw.cfg, {}, gw.view())
    del state
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"core_mb": round(core_now / 2**20, 1), "core_bytes_per_route_taken": round(core_now / max(1, taken)),
            "after_converge_mb": round((current - base) / 2**20, 1), "peak_mb": round((peak - base) / 2**20, 1)}


def run(n: int = 50_000, per: int = 60, reads: int = 15, with_memory: bool = False, limits: bool = True) -> dict:
    out = asyncio.run(scenario(n, per, reads, limits))
    out["limits"] = limits
    if with_memory:
        out["memory"] = memory(n, per, limits)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routes", type=int, default=50_000)
    ap.add_argument("--per-update", type=int, default=60)
    ap.add_argument("--reads", type=int, default=15, help="UPDATEs handled per socket read")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--no-limits", action="store_true", help="raise evpn.max_routes_per_* so the whole flood is taken")
    a = ap.parse_args()
    logging.getLogger("nsg").setLevel(logging.ERROR)
    print(json.dumps(run(a.routes, a.per_update, a.reads, a.memory, not a.no_limits)))


if __name__ == "__main__":
    main()

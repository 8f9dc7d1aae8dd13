"""The dataplane subsystem reads the kernel again at least every FULL_EVERY_S seconds, however busy
(issue 23): a steady trickle of EVPN changes makes every set() an incremental one, and so did a
resync that came together with a change; drift (an entry removed behind nsg's back) then stayed
until the trickle stopped. Before this bound, the test below saw one snapshot in 120 s of changes
every 5 s and the removed entry never put back."""

from __future__ import annotations

import asyncio

from nsg.compose import EvpnView, compose
from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import DelFdb, Fdb
from nsg.subsystems.dataplane import FULL_EVERY_S, DataplaneSubsystem
from tests.unit.engine.test_adapters import evpn_cfg, kernel


def mac(i: int) -> str:
    return f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"


def test_a_trickle_of_changes_still_gets_a_full_pass_within_the_bound():
    k = kernel()
    now = [0.0]
    dp = DataplaneSubsystem(Reconciler(k), clock=lambda: now[0])
    cfg = evpn_cfg()
    kept = Fdb("vx-100", mac(0), "198.19.255.9")

    def part(n: int):
        fdb = frozenset({kept, *(Fdb("vx-100", mac(i), "198.19.255.9") for i in range(1, n + 1))})
        return compose(cfg, evpn_view=EvpnView(fdb=fdb)).dataplane

    async def trickle() -> list[float]:
        await dp.set(part(0))
        assert dp.last_full and k.snapshots == 1
        k.apply(DelFdb(kept))  # someone removes our entry behind our back
        full_at = []
        for n in range(1, 25):  # a change every 5 s for 120 s
            now[0] = n * 5.0
            changes = await dp.set(part(n))
            if dp.last_full:
                full_at.append(now[0])
                repaired = [op for op in changes.ops if op.startswith("append") and kept.mac in op]
                assert bool(repaired) == (len(full_at) == 1)  # the first full pass puts it back
        return full_at

    full_at = asyncio.run(trickle())
    assert full_at == [30.0, 60.0, 90.0, 120.0]
    assert all(b - a <= FULL_EVERY_S for a, b in zip([0.0, *full_at], full_at, strict=False))
    assert kept in k.snapshot().fdb  # the drift was repaired by the first bounded full pass


def test_incremental_between_full_passes():
    k = kernel()
    now = [0.0]
    dp = DataplaneSubsystem(Reconciler(k), clock=lambda: now[0], full_every=30.0)
    cfg = evpn_cfg()

    async def go() -> None:
        await dp.set(compose(cfg).dataplane)
        for n in range(1, 6):
            now[0] = n * 5.0
            fdb = frozenset({Fdb("vx-100", mac(n), "198.19.255.9")})
            await dp.set(compose(cfg, evpn_view=EvpnView(fdb=fdb)).dataplane)
            assert not dp.last_full  # within the bound: no kernel read

    asyncio.run(go())
    assert k.snapshots == 1

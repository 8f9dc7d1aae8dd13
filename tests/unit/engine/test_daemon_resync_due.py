"""The daemon's periodic resync is due every resync_interval however busy its loop is (issue 23): it
used to run only after a whole interval without any event, so a steady trickle of EVPN events
starved it and drift in the kernel (here an FDB entry removed behind nsg's back) was never repaired.
Without the fix this test saw 0 resyncs in 1.5 s of events every 50 ms (interval 0.3 s)."""

from __future__ import annotations

import asyncio

from nsg.compose import EvpnView
from nsg.dataplane.types import AddFdb, DelFdb
from nsg.engine import Event
from tests.unit.engine.test_daemon_loop import REMOTE_MAC, Box, until


def test_a_trickle_of_events_does_not_starve_the_resync(tmp_path):
    box = Box(tmp_path)
    d = box.daemon
    d.resync_interval = 0.3

    async def go() -> None:
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await until("the first apply", lambda: d.counters["applies"] >= 1)
            box.evpn.rib = EvpnView(fdb=frozenset({REMOTE_MAC}))
            await box.event("evpn", lambda: AddFdb(REMOTE_MAC) in box.kernel.applied)
            box.kernel.apply(DelFdb(REMOTE_MAC))  # someone removed our entry behind our back
            before = d.counters["resyncs"]
            for _ in range(30):  # an event every 50 ms for 1.5 s: never a quiet interval
                d._request(Event("evpn"))
                await asyncio.sleep(0.05)
            assert d.counters["resyncs"] - before >= 3
            assert box.kernel.applied[-1] == AddFdb(REMOTE_MAC)  # repaired by a resync
            assert d.counters["drift_repairs"] >= 1
        finally:
            d.stop()
            assert await asyncio.wait_for(task, 10) == 0

    asyncio.run(go())

"""A route flood through the core, compose and the engine on the fake kernel (flood_bench.py, at a
tenth of its default size): the numbers are printed; only generous bounds are asserted, and the
structural facts that make a resync cheap (the same objects when nothing changed)."""

from __future__ import annotations

import asyncio
import json
import logging

from tests.unit.evpn_routes import flood_bench


def test_a_flood_and_a_legitimate_mac_beside_it(caplog):
    caplog.set_level(logging.ERROR, logger="nsg")
    out = flood_bench.run(5_000, limits=False)
    print(json.dumps(out))
    assert out["taken"] == 5_000
    assert out["legit_to_kernel_ms"] < 10_000 and out["flood_s"] < 60
    limited = flood_bench.run(25_000)  # the defaults: 10,000 of one site
    print(json.dumps(limited))
    assert limited["taken"] == 10_000


def test_a_resync_with_an_unchanged_rib_compares_objects():
    async def main():
        gw = flood_bench.Gateway(limits=False)
        for res in flood_bench.flood_updates(3_000, 60):
            gw.received(flood_bench.RR1, res)
        await gw.converge()
        first = gw.dp.last
        assert first is not None and len(first.fdb) == 6_000
        state = flood_bench.compose(gw.cfg, {}, gw.view())
        assert state.dataplane.fdb is first.fdb and state.dataplane == first
        result = await gw.engine.set(state)  # not forced: "no changes" without looking at the entries
        assert result.skipped == ("dataplane",)

    asyncio.run(main())

"""The reconciler's incremental path: entry-level changes (EVPN) without reading the kernel, the
full path whenever links/addresses change or something was held back, and a fall back to the full
path when the kernel no longer holds what we think (the fake kernel; the real one in tests/netns)."""

from __future__ import annotations

from dataclasses import replace

from nsg.dataplane.desired import build_desired
from nsg.dataplane.fake import FakeKernel
from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import DelFdb, Fdb, LinkState, Neigh, Snapshot
from nsg.model import parse_config
from tests.unit.conftest import base_doc


class Counting(FakeKernel):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.snapshots = 0

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return super().snapshot()


def kernel() -> Counting:
    links = {"lo": LinkState("lo", 1, None, 65536, True)}
    for i, name in enumerate(("wan0", "lan0"), start=2):
        links[name] = LinkState(name, i, "veth", 1500, True)
    return Counting(Snapshot(links=links))


def evpn_cfg():
    doc = base_doc()
    doc["evpn"] = {"asn": 65000, "peers": [{"address": "198.19.255.254", "asn": 65000}]}
    return parse_config(doc)


M = "02:00:00:00:00:07"


def test_entry_changes_skip_the_snapshot_and_match_a_full_apply():
    k = kernel()
    r = Reconciler(k)
    cfg = evpn_cfg()
    assert r.apply(build_desired(cfg, evpn_fdb=frozenset())).ok
    before = k.snapshots
    fdb = frozenset({Fdb("vx-100", M, "198.19.255.2"), Fdb("vx-100", M, "", master=True)})
    neigh = frozenset({Neigh("br-100", "198.19.0.7", M)})
    res = r.apply_incremental(build_desired(cfg, evpn_fdb=fdb, evpn_neighbors=neigh))
    assert res.ok and len(res.changes) == 3 and k.snapshots == before  # no kernel read
    moved = frozenset({Fdb("vx-100", M, "198.19.255.3"), Fdb("vx-100", M, "", master=True)})
    res = r.apply_incremental(build_desired(cfg, evpn_fdb=moved, evpn_neighbors=neigh))
    assert [c.split()[0] for c in res.changes] == ["delete", "append"] and k.snapshots == before
    # the kernel now holds exactly what a full apply would leave: a full pass changes nothing
    assert r.apply(build_desired(cfg, evpn_fdb=moved, evpn_neighbors=neigh)).changes == ()


def test_other_changes_and_held_back_items_take_the_full_path():
    k = kernel()
    r = Reconciler(k)
    cfg = evpn_cfg()
    r.apply(build_desired(cfg, evpn_fdb=frozenset()))
    n = k.snapshots
    doc = base_doc()
    doc["subnets"][0]["ports"] = ["lan0", "lan9"]  # lan9 does not exist: held back
    doc["evpn"] = {"asn": 65000, "peers": [{"address": "198.19.255.254", "asn": 65000}]}
    res = r.apply_incremental(build_desired(parse_config(doc), evpn_fdb=frozenset()))
    assert k.snapshots == n + 1 and res.waiting  # ports changed: full
    r.apply_incremental(build_desired(parse_config(doc), evpn_fdb=frozenset({Fdb("vx-100", M, "198.19.255.2")})))
    assert k.snapshots == n + 2  # something is waiting: full again, until it is not


def test_drift_makes_the_incremental_path_fall_back_to_a_full_apply():
    k = kernel()
    r = Reconciler(k)
    cfg = evpn_cfg()
    fdb = frozenset({Fdb("vx-100", M, "198.19.255.2")})
    r.apply(build_desired(cfg, evpn_fdb=fdb))
    k.apply(DelFdb(Fdb("vx-100", M, "198.19.255.2")))  # someone removed it behind our back
    res = r.apply_incremental(build_desired(cfg, evpn_fdb=frozenset()))  # our delete fails ...
    assert res.ok  # ... and the full pass that follows converges
    assert {f for f in k.snapshot().fdb} == set()
    r2 = r.apply_incremental(build_desired(cfg, evpn_fdb=fdb))
    assert r2.ok and Fdb("vx-100", M, "198.19.255.2") in k.snapshot().fdb
    assert replace(build_desired(cfg, evpn_fdb=fdb)) == r.last_good


def test_an_entry_that_does_not_encode_is_refused_not_raised_raw():
    """The pipelining adapter packs requests itself: a value that does not pack is a DataplaneError
    naming the operation (what the reconciler handles), never an OSError escaping it."""
    import pytest

    from nsg.dataplane.errors import DataplaneError
    from nsg.dataplane.netlink import NetlinkAdapter
    from nsg.dataplane.types import AddFdb

    adapter = NetlinkAdapter.__new__(NetlinkAdapter)  # no socket needed: the index is cached
    adapter._indexes = {"vx-100": 5}
    op = AddFdb(Fdb("vx-100", M, "not-an-address"))
    with pytest.raises(DataplaneError) as exc:
        adapter.apply_many([op])
    assert exc.value.op == op and exc.value.applied == frozenset()

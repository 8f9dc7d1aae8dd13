"""The status document's models (nsg/model/status.py) and the pure parts of nsg/status_doc.py: the
JSON `nsg status --json` prints is what the models dump, key for key, and reading it back changes
nothing (an app not seen yet has no restart count, a kernel SA no packet counters: such keys stay
absent, not null)."""

from __future__ import annotations

from nsg.dataplane.types import Fdb, LinkState, Neigh, Snapshot, VxlanSpec
from nsg.engine import Changes, EngineResult, SubsystemError
from nsg.model import parse_config
from nsg.model.status import AppStatus, ChildSaStatus, GatewayStatus, TunnelsStatus
from nsg.status_doc import MAX_OPS_SHOWN, devices, fdb, last_apply, neighbors
from tests.unit.conftest import base_doc
from tests.unit.test_status_render import doc as render_doc

M = "02:00:00:00:00:07"


def test_sparse_parts_dump_only_what_they_were_given():
    assert TunnelsStatus(backend=None).model_dump(mode="json") == {"backend": None}
    assert ChildSaStatus(dir="in", spi="0x00000001", peer="b2").model_dump(mode="json") == \
        {"dir": "in", "spi": "0x00000001", "peer": "b2"}
    absent = AppStatus(name="a", image="busybox", address="198.19.0.50/24", bridge="br-100", state="absent",
                       memory_mb=None, cpu_percent=None, error=None)
    assert list(absent.model_dump(mode="json")) == ["name", "image", "address", "bridge", "state", "memory_mb",
                                                    "cpu_percent", "error"]
    assert absent.restarts is None and absent.reported() == ("absent", None, None, None, None)


def test_a_document_reads_back_to_itself():
    d = render_doc()
    d["tunnels"]["child_sas"].append({"dir": "out", "spi": "0x00009999", "peer": "b2"})  # a kernel SA
    d["apps"] = {"apps": [{"name": "a", "image": "busybox", "address": None, "bridge": "br-100", "state": "unknown",
                           "attached": None, "memory_mb": None, "cpu_percent": None, "error": "engine down"}],
                 "engine_error": "engine down", "counters": {"passes": 1}, "last_pass": 12.5}
    st = GatewayStatus.model_validate(d)
    again = st.model_dump(mode="json")
    assert again["apps"] == d["apps"] and again["tunnels"]["child_sas"] == d["tunnels"]["child_sas"]
    assert GatewayStatus.model_validate(again).model_dump(mode="json") == again  # a fixed point


def test_a_box_without_a_config_sends_the_short_document():
    st = GatewayStatus(version="0.1", pid=1, counters={"applies": 0})
    assert list(st.model_dump(mode="json")) == ["version", "pid", "config", "last_apply", "channel", "counters",
                                                "last_reload_error", "bootstrap", "upgrade"]


def test_devices_fdb_and_neighbors_come_from_the_snapshot():
    cfg = parse_config(base_doc())  # subnet corp, vni 100, port lan0
    snap = Snapshot(
        links={"lo": LinkState("lo", 1, None, 65536, True),
               "lan0": LinkState("lan0", 2, "veth", 1500, True, master="br-100"),
               "eth9": LinkState("eth9", 3, "veth", 1500, True),  # neither ours nor a port of the config
               "br-100": LinkState("br-100", 4, "bridge", 1450, True, alias="nsg"),
               "vx-100": LinkState("vx-100", 5, "vxlan", 1450, False, master="br-100", alias="nsg",
                                   vxlan=VxlanSpec(100, "198.19.255.1"))},
        fdb=frozenset({Fdb("vx-100", M, "198.19.255.2"), Fdb("vx-100", M, "", master=True)}),
        neighbors=frozenset({Neigh("br-100", "198.19.0.7", M)}))
    assert [(d.name, d.owned, d.vni) for d in devices(cfg, snap)] == [
        ("br-100", True, None), ("lan0", False, None), ("vx-100", True, 100)]
    assert fdb(snap) == [f"vx-100 {M} dst 198.19.255.2", f"vx-100 {M} master"]
    assert neighbors(snap) == [f"br-100 198.19.0.7 lladdr {M}"]


def test_last_apply_lists_at_most_the_first_operations_and_counts_them_all():
    ops = tuple(f"add fdb {i}" for i in range(MAX_OPS_SHOWN + 5))
    result = EngineResult(changes=(("guard", Changes(("apply input guard",))), ("dataplane", Changes(ops, ("lan9",)))),
                          skipped=("dhcp",), error=SubsystemError("qos", "qos: refused"), rolled_back=("guard",),
                          at=5.0)
    la = last_apply(3, "reload", result)
    assert len(la.changes) == MAX_OPS_SHOWN and la.changes_made == MAX_OPS_SHOWN + 5 and la.waiting == ["lan9"]
    assert (la.failed, la.error, la.rolled_back, la.rolled_back_subsystems) == ("qos", "qos: refused", True, ["guard"])
    assert la.subsystems == {"guard": 1, "dataplane": MAX_OPS_SHOWN + 5} and la.skipped == ["dhcp"]

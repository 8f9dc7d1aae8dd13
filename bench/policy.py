"""Firewall policy: seconds to apply 5,000 ACL entries atomically, and to re-apply with no change,
through nsg's path (render the config's policy, `nft -j -f -` in one transaction, counters carried);
in the same run the peer: nft itself loading the very same ruleset from its own text format
(`nft -f`, what a hand-written firewall script costs), into a fresh namespace each time.

    sudo .venv/bin/python bench/policy.py [--entries 5000] [--samples 5]

Each sample runs in a namespace made for it (removed after). Medians of the samples. The last line
is one JSON object with `apply_5000_s` and `reapply_noop_s` (targets < 1 s and < 100 ms), and
`nft_native_apply_5000_s` for the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab import netns  # noqa: E402
from nsg.model import parse_config  # noqa: E402
from nsg.policy.nft import render  # noqa: E402
from tests.conftest import unique_name  # noqa: E402

WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from nsg.model import parse_config
from nsg.policy.apply import NftPolicy
doc = json.loads(open(sys.argv[2]).read())
cfg = parse_config(doc)  # the daemon holds a validated config; validation is timed apart (validate_s)
up = {"wan0": "wan0"}
p = NftPolicy()
t0 = time.perf_counter(); p.apply_config(cfg, up); first = time.perf_counter() - t0
# a reload of the same document: a new config object, equal to the running one (what SIGHUP or a
# controller push of an unchanged policy does)
again = parse_config(doc)
t0 = time.perf_counter(); changed = p.apply_config(again, up); noop = time.perf_counter() - t0
assert not changed
doc["policy"]["tenants"][0]["acl"][0]["dst_ports"] = [8443]
cfg = parse_config(doc)
t0 = time.perf_counter(); p.apply_config(cfg, up); change = time.perf_counter() - t0
n = len(p.counters())
print(json.dumps({"apply": first, "noop": noop, "change": change, "counters": n}))
"""


def config(entries: int) -> dict:
    acl = []
    for i in range(entries):
        acl.append({"name": f"e{i}", "src": f"198.18.{i % 250}.{(i // 250) % 250}/32",
                    "dst": f"198.19.{i % 120}.0/24", "protocol": "tcp" if i % 3 else "udp",
                    "dst_ports": [1000 + i % 60000], "action": ("allow", "drop", "reject")[i % 3]})
    return {"schema_version": 1, "system_ip": "198.19.255.1",
            "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                         "gateway": "198.18.1.1"}],
            "subnets": [{"name": "corp", "vni": 100, "cidr": "198.19.0.0/17", "gateway": "198.19.0.1"}],
            "policy": {"tenants": [{"name": "corp", "subnets": ["corp"], "acl": acl}]}}


def in_ns(ns: str, *argv: str, stdin: str | None = None) -> str:
    p = subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, check=True)
    return p.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"bench": "policy", "error": "needs root (namespaces, nftables)"}))
        return 1
    doc = config(args.entries)
    t0 = time.perf_counter()
    parse_config(doc)  # before anything is made: a config the model refuses leaves nothing behind
    validate_s = time.perf_counter() - t0
    work = Path(f"/tmp/nsg-bench-policy-{os.getpid()}")
    work.mkdir(mode=0o700)
    (work / "config.json").write_text(json.dumps(doc))
    # the peer's input: the same ruleset in nft's own text format, as nft itself lists it
    ours, native, noop, change = [], [], [], []
    text = None
    try:
        for _ in range(args.samples):
            ns = unique_name("bp")
            netns.add_namespace(ns)
            try:
                got = json.loads(in_ns(ns, sys.executable, "-c", WORKER, str(ROOT), str(work / "config.json")))
                assert got["counters"] == args.entries + 2, got  # every entry's counter, wall. and default.
                ours.append(got["apply"])
                noop.append(got["noop"])
                change.append(got["change"])
                if text is None:
                    text = in_ns(ns, "nft", "list", "table", "inet", "nsg")
            finally:
                netns.kill_namespace_processes(ns)
                netns.delete_namespace(ns)
            ns = unique_name("bq")
            netns.add_namespace(ns)
            try:
                t0 = time.perf_counter()
                in_ns(ns, "nft", "-f", "-", stdin=text)
                native.append(time.perf_counter() - t0)
                rules = in_ns(ns, "nft", "list", "table", "inet", "nsg").count("counter packets")
                assert rules >= args.entries, rules
            finally:
                netns.delete_namespace(ns)
    finally:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()
    render_s = statistics.median(_time_render(doc) for _ in range(3))
    result = {
        "bench": "policy", "entries": args.entries, "samples": args.samples,
        "apply_5000_s": round(statistics.median(ours), 3), "apply_samples_s": [round(x, 3) for x in ours],
        "reapply_noop_s": round(statistics.median(noop), 4), "reapply_noop_samples_s": [round(x, 4) for x in noop],
        "apply_change_s": round(statistics.median(change), 3),
        "nft_native_apply_5000_s": round(statistics.median(native), 3),
        "nft_native_samples_s": [round(x, 3) for x in native],
        "validate_s": round(validate_s, 3), "render_s": round(render_s, 3),
        "targets": {"apply_5000_s": 1.0, "reapply_noop_s": 0.1},
    }
    result["meets_targets"] = result["apply_5000_s"] < 1.0 and result["reapply_noop_s"] < 0.1
    print(json.dumps(result))
    return 0


def _time_render(doc: dict) -> float:
    cfg = parse_config(doc)
    t0 = time.perf_counter()
    render(cfg, {"wan0": "wan0"})
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())

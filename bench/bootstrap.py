"""Zero-touch time: seconds from `nsg run --bootstrap` on two empty boxes to the first successful
cross-branch ping (DHCP 143 -> SZTP -> EST -> channel -> config -> IKEv2/ESP -> VXLAN), median of 3.

    sudo .venv/bin/python bench/bootstrap.py [--runs 3]

Each run builds its own two-branch-nat lab (b2 behind a NAT), tears it down, and the last line is
one JSON object. There is no third-party zero-touch stack to run beside it here; the target of the
issue (< 5 s) is printed with the result.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import topology
from lab.lab import Lab
from lab.zerotouch import ZeroTouchLab


def one_run() -> float:
    lab = Lab(f"bb{secrets.token_hex(3)}")
    plan = lab.up(topology.load("two-branch-nat"))
    try:
        zt = ZeroTouchLab(lab, plan)
        zt.prepare()
        t0 = zt.power_on_all()
        while True:
            if lab.run("b1-h1", "ping", "-c", "1", "-W", "0.2", "198.19.0.21", check=False).returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > 120:
                raise RuntimeError("no cross-branch ping within 120 s")
    finally:
        lab.down()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs = [round(one_run(), 2) for _ in range(args.runs)]
    print(json.dumps({"bench": "zero_touch", "topology": "two-branch-nat", "runs_s": runs,
                      "seconds_to_first_ping": statistics.median(runs), "target_s": 5}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

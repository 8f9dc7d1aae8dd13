"""Userspace ESP engine throughput, against the plain veth path in the same run.

    sudo .venv/bin/python bench/esp.py [--seconds 5]

Builds two namespaces, runs iperf3 (TCP, one stream) over the plain WAN path and
then through nsg's userspace ESP engine (AES-GCM-128, ESP-in-UDP), tears down,
and prints one JSON object on its last line (Mbit/s).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.esp_pair import INNER, WAN, EspPair


def iperf(pair: EspPair, dst: str, bind: str, seconds: float) -> float:
    a, b = pair.ns
    srv = subprocess.Popen(["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-B", dst],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", a, "iperf3", "-c", dst, "-B", bind, "-t", str(seconds), "-J"],
                             capture_output=True, text=True, timeout=seconds + 30, check=True)
    finally:
        srv.wait(10)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pair = EspPair(f"be{secrets.token_hex(2)}", Path(tmp))
        try:
            pair.up()
            plain = iperf(pair, WAN[1], WAN[0], args.seconds)
            esp = iperf(pair, INNER[1], INNER[0], args.seconds)
            c = pair.counters(1)
        finally:
            pair.down()
    result = {
        "bench": "esp_userspace_tcp",
        "seconds": args.seconds,
        "plain_veth_mbps": round(plain, 1),
        "nsg_userspace_esp_mbps": round(esp, 1),
        "esp_drops_rx": c["engine"]["esp_drops"],
        "ratio_vs_plain": round(esp / plain, 4) if plain else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

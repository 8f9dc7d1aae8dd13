"""ESP throughput: nsg's userspace engine against strongSwan's userspace ESP, same run, same box.

    sudo .venv/bin/python bench/esp.py [--seconds 5]

Two namespaces joined by a veth; iperf3 (TCP, one stream, 198.19.250.1 -> .2):
  1. the plain veth path (the ceiling);
  2. through nsg's userspace ESP engine (AES-GCM-128, ESP-in-UDP, manually keyed);
  3. through strongSwan charon with kernel-libipsec (its userspace ESP; the peer the
     other numbers are compared with), IKEv2 PSK, AES-GCM-128, ESP-in-UDP.
Tears everything down and prints one JSON object on its last line (Mbit/s).
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
from tests.interop.strongswan import Charon, Child, Connection, two_peers


def iperf(pair, dst: str, bind: str, seconds: float) -> float:
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


def strongswan(workdir: Path, seconds: float) -> float:
    """The same transfer between two charons (kernel-libipsec) in a fresh pair of namespaces."""
    with two_peers(ike=WAN, inner=INNER) as net:
        charons = []
        try:
            for side in (0, 1):
                child = Child("net", (f"{INNER[side]}/32",), (f"{INNER[1 - side]}/32",))
                c = Charon(net.ns[side], workdir / f"swan{side}", WAN[side], name=f"swan{side}")
                c.add(Connection("gw", remote_addrs=(WAN[1 - side],), local_id=WAN[side], remote_id=WAN[1 - side],
                                 children=(child,), auth="psk", psk="bench-psk-0123456789"))
                charons.append(c.start())
            charons[0].initiate("net", "gw")
            charons[0].wait_established("gw", "net")
            charons[1].wait_established("gw", "net")
            return iperf(net, INNER[1], INNER[0], seconds)
        finally:
            for c in charons:
                c.stop()


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
        swan = strongswan(Path(tmp), args.seconds)
    result = {
        "bench": "esp_userspace_tcp",
        "seconds": args.seconds,
        "plain_veth_mbps": round(plain, 1),
        "nsg_userspace_esp_mbps": round(esp, 1),
        "strongswan_libipsec_mbps": round(swan, 1),
        "nsg_vs_strongswan": round(esp / swan, 3) if swan else None,
        "esp_drops_rx": c["engine"]["esp_drops"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run the userspace engine with manually keyed SAs (like `ip xfrm state add` by hand).

For labs, benchmarks and debugging; gateways key their SAs with IKEv2.

    python -m ipsec.engine.manual SPEC.json

SPEC: {"tun": "esp0", "listen": ["198.18.1.2"], "counters": "/path/counters.json",
       "sas": [{"peer": "198.19.255.2", "endpoint": "198.18.2.2", "port": 4500,
                "out_spi": 4096, "in_spi": 8192, "out_key": hex, "out_salt": hex,
                "in_key": hex, "in_salt": hex, "esn": true, "window": 1024}]}
The TUN device is created here; its addresses and routes are the caller's business.
SIGUSR1 writes the counters file; SIGTERM writes it and exits.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import threading
from pathlib import Path

from ipsec.engine.userspace import UserspaceEngine
from ipsec.esp import InboundSA, OutboundSA
from ipsec.sad import Endpoint, Inbound, Lifetime, Outbound, Sad


def build(spec: dict) -> tuple[UserspaceEngine, Path | None]:
    sad = Sad()
    now = sad.clock()
    for sa in spec["sas"]:
        peer = ipaddress.IPv4Address(sa["peer"]).packed
        esn = bool(sa.get("esn", True))
        sad.add_inbound(Inbound(InboundSA(int(sa["in_spi"]), bytes.fromhex(sa["in_key"]),
                                          bytes.fromhex(sa["in_salt"]), esn, int(sa.get("window", 1024))),
                                peer, Lifetime(), now))
        sad.set_outbound(peer, Outbound(OutboundSA(int(sa["out_spi"]), bytes.fromhex(sa["out_key"]),
                                                   bytes.fromhex(sa["out_salt"]), esn),
                                        Endpoint(sa["endpoint"], int(sa.get("port", 4500))), Lifetime(), now))
    engine = UserspaceEngine(spec.get("tun", "esp0"), sad)
    engine.open()
    for addr in spec.get("listen", ["0.0.0.0"]):
        engine.add_socket(addr)
    counters = spec.get("counters")
    return engine, Path(counters) if counters else None


def snapshot(engine: UserspaceEngine) -> dict:
    return {
        "engine": dict(engine.counters),
        "inbound": {f"{spi:#010x}": e.sa.counters.as_dict() for spi, e in engine.sad.inbound.items()},
        "outbound": {f"{o.sa.spi:#010x}": o.sa.counters.as_dict() for o in engine.sad.outbound.values()},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ipsec.engine.manual SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    engine, counters = build(spec)
    done = threading.Event()

    def dump(*_: object) -> None:
        if counters:
            tmp = counters.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot(engine)))
            tmp.replace(counters)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    engine.start()
    print("engine up", flush=True)
    while not done.wait(0.5):
        pass
    dump()
    engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Helper processes of bench/evpn.py, each run inside one of the bench's namespaces.

    python bench/_evpn_agent.py watch            # in b2: VXLAN FDB entries as they appear
    python bench/_evpn_agent.py send IFNAME      # in a LAN host: one ARP request per stdin line
    python bench/_evpn_agent.py inject ...       # passive BGP speaker: N type-2 routes (on SIGUSR1)

Every process speaks JSON lines on stdout; times are ``time.monotonic_ns()``, which all network
namespaces share (CLOCK_MONOTONIC is not namespaced unless a time namespace is made), so the bench
can subtract a time taken in one namespace from a time taken in another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AF_BRIDGE = 7
NTF_SELF = 0x02
ETH_P_ARP = 0x0806


def emit(**kw: object) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


# --- watch: the moment a MAC lands in a VXLAN device's own FDB (the entry with a remote VTEP) -----


def watch() -> int:
    """RTM_NEWNEIGH (AF_BRIDGE) events carrying NDA_DST, i.e. ``bridge fdb ... dev vx-N dst VTEP self``.

    Timestamps are taken when the event is read, right after the kernel installed the entry; the bridge's
    own (master) entries and the all-zero flood entries are left out. A blocking ``get()`` loop, not
    select() on the socket: pyroute2 0.9 buffers what one recv() brought beyond the first message, so the
    socket stops polling readable while messages still wait (they would surface with the next event).
    SIGTERM ends the process (default action)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.rtnl import RTMGRP_LINK, RTMGRP_NEIGH

    names: dict[int, str] = {}
    with IPRoute() as ip:
        ip.bind(groups=RTMGRP_LINK | RTMGRP_NEIGH)
        for m in ip.get_links():
            names[m["index"]] = m.get("ifname")
        emit(ready=True)
        while True:
            for m in ip.get():
                t = time.monotonic_ns()
                event = m.get("event")
                if event == "RTM_NEWLINK":
                    names[m["index"]] = m.get("ifname")
                elif event == "RTM_NEWNEIGH" and m.get("family") == AF_BRIDGE:
                    dst, mac = m.get("NDA_DST"), m.get("NDA_LLADDR")
                    if dst and mac and mac != "00:00:00:00:00:00":
                        emit(t=t, mac=mac.lower(), dst=dst, dev=names.get(m["ifindex"]), flags=m.get("flags", 0))


# --- send: a host with a new MAC says hello (an ARP request for its gateway) ----------------------


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    mac = bytes.fromhex(src_mac.replace(":", ""))
    eth = b"\xff" * 6 + mac + ETH_P_ARP.to_bytes(2, "big")
    # RFC 826: htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op 1 (request)
    arp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + IPv4Address(src_ip).packed + bytes(6)
           + IPv4Address(target_ip).packed)
    return (eth + arp).ljust(60, b"\x00")


def send(ifname: str) -> int:
    """Per stdin line ``MAC IP TARGET``: one broadcast ARP request with that source MAC out of ``ifname``;
    prints the time taken just before the frame was handed to the kernel."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    emit(ready=True)
    for line in sys.stdin:
        mac, ip, target = line.split()
        frame = arp_request(mac, ip, target)
        t = time.monotonic_ns()
        s.send(frame)
        emit(t=t, mac=mac)
    return 0


# --- inject: N type-2 routes into one peer, as fast as TCP takes them -----------------------------


class _Encoded:
    """An UPDATE encoded ahead of time, so the clock measures the receiver, not our encoder."""

    def __init__(self, data: bytes):
        self.data = data

    def encode(self) -> bytes:
        return self.data


def build_updates(count: int, vni: int, asn: int, next_hop: str, per_update: int) -> list[bytes]:
    from bgp.codec import Update
    from bgp.evpn_nlri import RouteDistinguisher, encap_vxlan, mac_ip_route, route_target

    rd = RouteDistinguisher.ipv4(next_hop, 1)
    comms = (route_target(asn, vni), encap_vxlan())
    routes = [mac_ip_route(rd, f"02:be:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01", None, vni)
              for i in range(count)]
    return [Update.for_evpn(routes[i:i + per_update], next_hop, comms).encode()
            for i in range(0, count, per_update)]


async def inject(args: argparse.Namespace) -> int:
    from bgp import fsm
    from bgp.speaker import Speaker

    updates = [_Encoded(b) for b in build_updates(args.count, args.vni, args.asn, args.next_hop, args.per_update)]
    emit(built=len(updates), octets=sum(len(u.data) for u in updates))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    speakers: list[Speaker] = []

    def go() -> None:
        sp = speakers[0] if speakers else None
        if sp is None or sp.session.state is not fsm.State.ESTABLISHED:
            emit(error="go: no established session")
            return
        t0 = time.monotonic_ns()
        for u in updates:
            sp.send(u)  # type: ignore[arg-type] - anything with encode() will do
        emit(t0=t0, t_queued=time.monotonic_ns(), updates=len(updates), routes=args.count)

    def on_state(state: str) -> None:
        emit(state=state, t=time.monotonic_ns())
        if state == "up" and not args.wait_go:
            go()

    loop.add_signal_handler(signal.SIGUSR1, go)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        if speakers or peer != args.peer:
            writer.close()
            return
        cfg = fsm.Config(args.asn, args.listen, args.asn, hold_time=9, passive=True)
        sp = Speaker(cfg, peer, on_state=on_state)
        speakers.append(sp)
        sp.attach(reader, writer)

    server = await asyncio.start_server(accept, args.listen, 179)
    emit(listening=args.listen)
    await done.wait()
    server.close()
    for sp in speakers:
        await sp.stop()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("watch")
    s = sub.add_parser("send")
    s.add_argument("ifname")
    i = sub.add_parser("inject")
    i.add_argument("--listen", required=True, help="our address (port 179, passive)")
    i.add_argument("--peer", required=True, help="the one peer we accept")
    i.add_argument("--asn", type=int, required=True)
    i.add_argument("--vni", type=int, required=True)
    i.add_argument("--next-hop", required=True, help="the VTEP the routes point at")
    i.add_argument("--count", type=int, default=10_000)
    i.add_argument("--per-update", type=int, default=100, help="NLRIs per UPDATE (100 fit in 4096 octets)")
    i.add_argument("--wait-go", action="store_true", help="send only on SIGUSR1 (the session up and idle first)")
    args = ap.parse_args()
    if args.cmd == "watch":
        return watch()
    if args.cmd == "send":
        return send(args.ifname)
    return asyncio.run(inject(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""Run inside a test namespace: our BGP speaker toward one peer; JSON events on stdout.

argv: local_addr peer_addr asn mac ip vni"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from bgp import fsm
from bgp.codec import Update
from bgp.constants import AttrType
from bgp.evpn_nlri import (
    InclusiveMulticastRoute,
    MacIpRoute,
    RouteDistinguisher,
    encap_vxlan,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from bgp.speaker import Speaker


def emit(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def on_update(result) -> None:
    upd = result.update
    routes = []
    for attr, withdrawn in ((upd.mp_reach, False), (upd.mp_unreach, True)) if upd else ():
        for r in attr.nlri if attr else ():
            if isinstance(r, MacIpRoute):
                routes.append({"type": 2, "mac": r.mac, "ip": str(r.ip) if r.ip else None, "vni": r.vni,
                               "withdrawn": withdrawn})
            elif isinstance(r, InclusiveMulticastRoute):
                pmsi = upd.get(AttrType.PMSI_TUNNEL)
                routes.append({"type": 3, "originator": str(r.originator), "withdrawn": withdrawn,
                               "pmsi_vni": pmsi.tunnel.vni if pmsi else None})
    emit(update=routes, next_hop=str(upd.mp_reach.next_hop) if upd and upd.mp_reach else None)


async def main(local: str, peer: str, asn: int, mac: str, ip: str, vni: int) -> None:
    sp = Speaker(fsm.Config(asn, local, asn, hold_time=9), peer, local=local, on_update=on_update,
                 on_state=lambda s: emit(state=s))
    rd = RouteDistinguisher.ipv4(local, 1)
    comms = (route_target(asn, vni), encap_vxlan())
    sp.advertise(Update.for_evpn((mac_ip_route(rd, mac, ip, vni),), local, comms))
    imet, pmsi = inclusive_multicast_route(rd, vni, local)
    sp.advertise(Update.for_evpn((imet,), local, comms, pmsi=pmsi))
    sp.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sp.stop()
    emit(counters=sp.session.counters)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], int(a[2]), a[3], a[4], int(a[5])))

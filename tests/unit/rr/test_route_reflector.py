"""The controller's route reflector with two of our speakers as clients, on loopback: what one client
announces reaches the other with ORIGINATOR_ID and CLUSTER_LIST (RFC 4456); a newcomer is caught up;
a client that leaves takes its routes along."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from bgp import fsm
from bgp.codec import Update
from bgp.constants import AttrType
from bgp.evpn_nlri import MacIpRoute, RouteDistinguisher, encap_vxlan, mac_ip_route, route_target
from bgp.speaker import Speaker
from controller.route_reflector import RouteReflector

ASN = 65000


def client(rr_port: int, local: str, router_id: str, got: list) -> Speaker:
    return Speaker(fsm.Config(ASN, router_id, ASN, hold_time=9), "127.0.0.1", local=local, port=rr_port,
                   on_update=got.append)


async def until(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_reflection_originator_cluster_and_withdrawal():
    async def main():
        rr = RouteReflector(ASN, "198.19.255.254")
        port = await rr.start("127.0.0.1", 0)
        got_a, got_b = [], []
        a = client(port, "127.0.0.2", "198.19.255.1", got_a)
        route = mac_ip_route(RouteDistinguisher.ipv4("198.19.255.1", 1), "02:00:00:00:00:0a", "198.19.0.10", 100)
        a.advertise(Update.for_evpn((route,), "198.19.255.1", (route_target(ASN, 100), encap_vxlan())))
        a.start()
        await until(lambda: a.session.state is fsm.State.ESTABLISHED and rr.clients.get("127.0.0.2")
                    and rr.clients["127.0.0.2"].routes)
        b = client(port, "127.0.0.3", "198.19.255.2", got_b)  # joins later: must be caught up
        b.start()
        await until(lambda: any(r.update and r.update.mp_reach for r in got_b))
        upd = next(r.update for r in got_b if r.update and r.update.mp_reach)
        (nlri,) = upd.mp_reach.nlri
        assert isinstance(nlri, MacIpRoute) and nlri.mac == "02:00:00:00:00:0a" and nlri.vni == 100
        assert upd.get(AttrType.ORIGINATOR_ID).router_id == IPv4Address("198.19.255.1")
        assert upd.get(AttrType.CLUSTER_LIST).cluster_ids == (IPv4Address("198.19.255.254"),)
        assert str(upd.mp_reach.next_hop) == "198.19.255.1"  # a reflector leaves the next hop alone
        assert not any(r.update and r.update.mp_reach for r in got_a)  # nothing comes back to its sender
        await a.stop()
        await until(lambda: any(r.update and r.update.mp_unreach for r in got_b))
        assert rr.counters["reflected"] == 1 and rr.counters["accepted"] == 2
        await b.stop()
        await rr.stop()

    asyncio.run(main())


def test_a_client_that_restarts_replaces_its_old_session():
    """A client killed and started again connects while the reflector still holds its old session
    (its hold timer has not run out): the new session takes over at once, the old one's routes are
    withdrawn and the new one's reflected, and strangers stay out."""
    async def main():
        rr = RouteReflector(ASN, "198.19.255.254", allowed={"127.0.0.2", "127.0.0.3"})
        port = await rr.start("127.0.0.1", 0)
        got_b: list = []
        b = client(port, "127.0.0.3", "198.19.255.2", got_b)
        b.start()
        a = client(port, "127.0.0.2", "198.19.255.1", [])
        old = mac_ip_route(RouteDistinguisher.ipv4("198.19.255.1", 1), "02:00:00:00:00:0a", None, 100)
        a.advertise(Update.for_evpn((old,), "198.19.255.1", (route_target(ASN, 100), encap_vxlan())))
        a.start()
        await until(lambda: any(r.update and r.update.mp_reach for r in got_b))
        # a goes silent without closing its connection (a box that lost power: no NOTIFICATION, no
        # FIN), and a new a comes
        zombie = a._writer  # kept open: the reflector sees nothing but silence
        a._writer = None
        for h in a._timers.values():
            h.cancel()
        a._reader_task.cancel()
        a2 = client(port, "127.0.0.2", "198.19.255.1", [])
        new = mac_ip_route(RouteDistinguisher.ipv4("198.19.255.1", 1), "02:00:00:00:00:0b", None, 100)
        a2.advertise(Update.for_evpn((new,), "198.19.255.1", (route_target(ASN, 100), encap_vxlan())))
        a2.start()
        await until(lambda: any(r.update and r.update.mp_reach and r.update.mp_reach.nlri[0].mac.endswith("0b")
                                for r in got_b), timeout=3)  # well before a 9 s hold timer
        assert any(r.update and r.update.mp_unreach for r in got_b)  # the old session's route went
        assert rr.counters["replaced"] == 1 and rr.clients["127.0.0.2"].speaker.session.state is fsm.State.ESTABLISHED
        stranger = client(port, "127.0.0.4", "198.19.255.9", [])
        stranger.start()
        await until(lambda: rr.counters["refused"] >= 1)
        for sp in (a2, b, stranger):
            await sp.stop()
        zombie.close()
        await rr.stop()

    asyncio.run(main())

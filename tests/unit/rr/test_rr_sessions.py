"""The reflector with a view, on loopback: a compromised b1 probes it the way the issue did (another
site's MAC, next hop, RD, hosts, withdrawals, ORIGINATOR_ID, the default route in pieces) and only
its own route gets through; the view changes under running sessions; OPENs with hold time 0, a low
hold time, or an identifier that is not theirs are refused; the route limit, its teardown and
back-off; the announcement rate. Clients are our speakers or bare peers (rawpeer.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from ipaddress import IPv4Address

from bgp import fsm
from bgp.attributes import OriginatorId
from bgp.codec import Keepalive, Open, Update
from bgp.constants import AttrType, CeaseSubcode, ErrorCode, OpenSubcode
from bgp.evpn_nlri import (
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    RouteDistinguisher,
    encap_vxlan,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from bgp.speaker import Speaker
from controller.route_reflector import RouteReflector
from controller.rr_check import Limits, Reason
from controller.rr_policy import parse_view
from tests.unit.rr.rawpeer import RawPeer, mac_flood, until

ASN = 65000
RR_ID = "198.19.255.254"
B1, B2, B3 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
M = "02:00:00:00:02:06"  # b2's host


def view(b1_extra: dict | None = None, clients=(B1, B2, B3)):
    doc = {"asn": ASN, "subnets": {"100": {"cidr": "198.19.0.0/24", "gateway": "198.19.0.1"}},
           "clients": {ip: {"name": f"b{i + 1}", "vnis": [100]} for i, ip in enumerate((B1, B2, B3)) if ip in clients}}
    if B2 in doc["clients"]:
        doc["clients"][B2]["hosts"] = ["198.19.0.6"]
    if b1_extra and B1 in doc["clients"]:
        doc["clients"][B1].update(b1_extra)
    return parse_view(json.dumps(doc), "test")


def speaker(port: int, sysip: str, got: list, router_id: str | None = None) -> Speaker:
    return Speaker(fsm.Config(ASN, router_id or sysip, ASN, hold_time=9), "127.0.0.1", local=sysip, port=port,
                   on_update=got.append)


def rd(ip: str) -> RouteDistinguisher:
    return RouteDistinguisher.ipv4(ip, 100)


def t2(ip: str, mac: str, host: str | None = None, nh: str | None = None, seq: int = 0, extra=()) -> Update:
    comms = [route_target(ASN, 100), encap_vxlan()] + ([MacMobility(seq)] if seq else [])
    upd = Update.for_evpn((mac_ip_route(rd(ip), mac, host, 100),), nh or ip, comms)
    return Update(attributes=upd.attributes + tuple(extra))


def t5(ip: str, prefix: str, plen: int) -> Update:
    route = IpPrefixRoute(rd(ip), IPv4Address(prefix), plen, IPv4Address("198.19.0.20"), 100)
    return Update.for_evpn((route,), ip, (route_target(ASN, 100), encap_vxlan()))


def reach(got: list) -> list:
    return [n for r in got if r.update and r.update.mp_reach for n in r.update.mp_reach.nlri]


def unreach(got: list) -> list:
    return [n for r in got if r.update and r.update.mp_unreach for n in r.update.mp_unreach.nlri]


def test_a_compromised_client_gets_only_its_own_routes_through():
    async def main():
        events = []

        async def hook(ev):
            events.append(ev)

        rr = RouteReflector(ASN, RR_ID, view=view(), on_security_event=hook)
        port = await rr.start("127.0.0.1", 0)
        got2, got3 = [], []
        b2 = speaker(port, B2, got2)
        b2.advertise(t2(B2, M))
        b2.advertise(t2(B2, M, "198.19.0.6"))
        b2.start()
        b3 = speaker(port, B3, got3)
        b3.start()
        await until(lambda: len(reach(got3)) == 2, what="b2's routes at b3")
        b1 = speaker(port, B1, [])
        imet, pmsi = inclusive_multicast_route(rd(B1), 100, B2)
        for probe in (
            t2(B2, M, nh=B2),  # b2's route as it is, from b1: foreign next hop
            t2(B1, M, seq=5),  # b2's MAC, own RD and next hop, sequence jumped: MAC hijack
            Update.withdraw_evpn((mac_ip_route(rd(B2), M, "198.19.0.6", 100),)),  # withdraw b2's MAC+IP route
            t2(B1, "02:00:00:00:01:99", "198.19.0.6"),  # b2's host's IP bound to b1's MAC
            Update.for_evpn((imet,), B1, (route_target(ASN, 100), encap_vxlan()), pmsi),  # flood to b2
            t2(B1, "02:00:00:00:01:98", extra=(OriginatorId(IPv4Address(B2)),)),  # b2 would drop it as a loop
            t5(B1, "0.0.0.0", 1), t5(B1, "128.0.0.0", 2),  # the default route in pieces
            t2(B1, "02:00:00:00:01:01"),  # its own host: the one route that goes through
        ):
            b1.advertise(probe)
        b1.start()
        await until(lambda: any(isinstance(n, MacIpRoute) and n.mac.endswith("01:01") for n in reach(got3)),
                    what="b1's own route at b3")
        from_b1 = [n for n in reach(got3) if n.rd == rd(B1)]
        assert [n.mac for n in from_b1] == ["02:00:00:00:01:01"]
        assert len(reach(got3)) == 3 and unreach(got3) == []  # b2's routes untouched
        assert [n.mac for n in reach(got2)] == ["02:00:00:00:01:01"]
        counters = rr.status()["clients"][B1]["counters"]
        assert counters == {"foreign-next-hop": 2, "mobility-sequence-jump": 1, "withdraw-not-announced": 1,
                            "foreign-host": 1, "originator-id-supplied": 1, "default-or-covering-prefix": 2,
                            "accepted": 1}, counters
        await until(lambda: len(events) >= 6, what="security events at the hook")
        assert {(e.client, e.reason) for e in events} == {(B1, Reason(r)) for r in counters if r != "accepted"}
        assert all(e.example and e.ts and e.name == "b1" for e in events)
        for sp in (b1, b2, b3):
            await sp.stop()
        await rr.stop()

    asyncio.run(main())


def test_the_view_changes_under_running_sessions():
    """A prefix refused before the view granted it goes through once it does; a client dropped from
    the view is closed (Cease, Peer De-configured) and its routes withdrawn."""
    async def main():
        rr = RouteReflector(ASN, RR_ID, view=view())
        port = await rr.start("127.0.0.1", 0)
        got3: list = []
        b3 = speaker(port, B3, got3)
        b3.start()
        b1 = RawPeer(port, B1)
        await b1.connect()
        await asyncio.wait_for(b1.opened.wait(), 5)
        b1.send(t5(B1, "203.0.113.0", 24).encode())
        b1.send(t2(B1, "02:00:00:00:01:01").encode())
        await until(lambda: len(reach(got3)) == 1)
        assert rr.status()["clients"][B1]["counters"]["foreign-prefix"] == 1
        rr.set_view(view({"prefixes": ["203.0.113.0/24"]}))
        await until(lambda: any(isinstance(n, IpPrefixRoute) for n in reach(got3)), what="the granted prefix")
        rr.set_view(view({"vnis": [100]}, clients=(B2, B3)))
        await asyncio.wait_for(b1.closed.wait(), 5)
        assert b1.notifications[-1][:2] == (ErrorCode.CEASE, CeaseSubcode.PEER_DECONFIGURED)
        await until(lambda: len(unreach(got3)) == 2, what="b1's routes withdrawn")
        await b1.close()
        await b3.stop()
        await rr.stop()

    asyncio.run(main())


def _open_refusal(rr_kwargs: dict, peer_kwargs: dict, first: tuple | None = None):
    async def main():
        rr = RouteReflector(ASN, RR_ID, **rr_kwargs)
        port = await rr.start("127.0.0.1", 0)
        if first is not None:
            a = speaker(port, first[0], [], router_id=first[1])
            a.start()
            await until(lambda: a.session.state is fsm.State.ESTABLISHED)
        peer = RawPeer(port, **peer_kwargs)
        await peer.connect()
        await asyncio.wait_for(peer.closed.wait(), 5)
        await asyncio.sleep(0.05)
        await peer.close()
        if first is not None:
            assert a.session.state is fsm.State.ESTABLISHED  # the first one stays
            await a.stop()
        await rr.stop()
        return peer.notifications, rr.status()

    return asyncio.run(main())


def test_hold_time_zero_and_below_the_minimum_are_refused():
    for hold, rr_kwargs in ((0, {}), (4, {"limits": Limits(min_hold_time=5)})):
        notes, st = _open_refusal(rr_kwargs, {"local": B1, "hold": hold})
        assert notes[0][:2] == (ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME), (hold, notes)
        assert [e["reason"] for e in st["security_events"]] == ["hold-time-refused"]


def test_identifiers_that_are_not_the_clients_own_are_refused():
    # without a view: our own identifier, and the identifier of a client already up
    notes, _ = _open_refusal({}, {"local": B2, "router_id": RR_ID})
    assert notes[0][:2] == (ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER)
    notes, st = _open_refusal({}, {"local": B2, "router_id": "198.19.255.1"}, first=(B1, "198.19.255.1"))
    assert notes[0][:2] == (ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER)
    assert st["security_events"][-1]["reason"] == "bad-bgp-identifier"
    # with a view: the system IP it connects from is the only identifier it may use
    notes, _ = _open_refusal({"view": view()}, {"local": B1, "router_id": B2})
    assert notes[0][:2] == (ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER)
    notes, st = _open_refusal({"view": view()}, {"local": "127.0.0.9"})
    assert notes == [] and st["refused"] == 1 and st["security_events"][0]["reason"] == "not-a-client"


def test_max_routes_refuses_the_excess_then_tears_down_and_backs_off(caplog):
    async def main():
        limits = Limits(max_routes=50, over_excess=10, backoff=30)
        rr = RouteReflector(ASN, RR_ID, view=view(), limits=limits)
        port = await rr.start("127.0.0.1", 0)
        w = await RawPeer(port, B3).connect()
        await asyncio.wait_for(w.opened.wait(), 5)
        f = await RawPeer(port, B1).connect()
        await asyncio.wait_for(f.opened.wait(), 5)
        for frame in mac_flood(B1, 100):
            f.send(frame)
        await asyncio.wait_for(f.closed.wait(), 5)
        # RFC 4486: Cease / Maximum Number of Prefixes Reached, data AFI 25, SAFI 70, the limit
        assert f.notifications == [(ErrorCode.CEASE, CeaseSubcode.MAX_PREFIXES,
                                    b"\x00\x19\x46" + (50).to_bytes(4, "big"))]
        await until(lambda: len([n for u in w.updates() if u.mp_unreach for n in u.mp_unreach.nlri]) == 50,
                    what="its 50 routes withdrawn at the watcher")
        assert len([n for u in w.updates() if u.mp_reach for n in u.mp_reach.nlri]) == 50
        again = await RawPeer(port, B1).connect()
        await asyncio.wait_for(again.closed.wait(), 5)
        assert again.notifications == [(ErrorCode.CEASE, CeaseSubcode.CONNECTION_REJECTED, b"")]
        st = rr.status()
        reasons = [e["reason"] for e in st["security_events"]]
        assert {"over-max-routes", "max-routes-teardown", "reconnect-in-backoff"} <= set(reasons), reasons
        assert st["backoff"] == [B1] and B1 not in st["clients"] and st["clients"][B3]["state"] == "Established"
        for p in (w, f, again):
            await p.close()
        await rr.stop()

    with caplog.at_level(logging.WARNING, logger="controller.rr"):
        asyncio.run(main())
    assert "holds 40 routes, 80% of its limit of 50" in caplog.text


def test_a_client_over_its_limit_for_the_grace_time_goes():
    async def main():
        rr = RouteReflector(ASN, RR_ID, view=view(), limits=Limits(max_routes=5, over_excess=1000, over_grace=0.3))
        port = await rr.start("127.0.0.1", 0)
        f = await RawPeer(port, B1).connect()
        await asyncio.wait_for(f.opened.wait(), 5)
        for frame in mac_flood(B1, 6):
            f.send(frame)
        await asyncio.wait_for(f.closed.wait(), 3)  # within a housekeeping round after the grace
        assert f.notifications[0][:2] == (ErrorCode.CEASE, CeaseSubcode.MAX_PREFIXES)
        await f.close()
        await rr.stop()

    asyncio.run(main())


def test_announcements_beyond_the_rate_are_refused():
    async def main():
        rr = RouteReflector(ASN, RR_ID, view=view(), limits=Limits(rate=5, burst=10))
        port = await rr.start("127.0.0.1", 0)
        w = await RawPeer(port, B3).connect()
        await asyncio.wait_for(w.opened.wait(), 5)
        f = await RawPeer(port, B1).connect()
        await asyncio.wait_for(f.opened.wait(), 5)
        for frame in mac_flood(B1, 30):
            f.send(frame)
        await until(lambda: sum(rr.status()["clients"][B1]["counters"].values()) == 30)
        counters = rr.status()["clients"][B1]["counters"]
        assert 10 <= counters["accepted"] <= 12 and counters["accepted"] + counters["rate-limited"] == 30, counters
        await until(lambda: len(w.updates()) >= counters["accepted"])
        assert rr.clients[B1].speaker.session.state is fsm.State.ESTABLISHED  # refused, not torn down
        for p in (w, f):
            await p.close()
        await rr.stop()

    asyncio.run(main())


def test_a_client_that_does_not_read_is_dropped_not_buffered_forever():
    async def main():
        rr = RouteReflector(ASN, RR_ID, view=view(), limits=Limits(max_send_buffer=64 << 10, rate=1e6))
        port = await rr.start("127.0.0.1", 0)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the queue is ours
        sock.bind((B3, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(Open.build(ASN, B3, hold_time=9).encode() + Keepalive().encode())  # and never reads
        await until(lambda: B3 in rr.clients and rr.clients[B3].speaker.session.state is fsm.State.ESTABLISHED)
        # the kernel's send buffer toward it made small too (this box's default holds megabytes), so
        # that what it does not read piles up in the reflector
        rr.clients[B3].speaker._writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        f = await RawPeer(port, B1).connect()
        await asyncio.wait_for(f.opened.wait(), 5)
        for frame in mac_flood(B1, 9000):
            f.send(frame)
        await until(lambda: B3 not in rr.clients, timeout=5, what="the sluggish client dropped")
        assert [e["reason"] for e in rr.status()["security_events"]] == ["send-buffer-overflow"]
        writer.close()
        await f.close()
        await rr.stop()

    asyncio.run(main())


def test_reflected_routes_carry_originator_and_cluster():
    async def main():
        rr = RouteReflector(ASN, RR_ID, view=view())
        port = await rr.start("127.0.0.1", 0)
        got3: list = []
        b3 = speaker(port, B3, got3)
        b3.start()
        b1 = speaker(port, B1, [])
        b1.advertise(t2(B1, "02:00:00:00:01:01"))
        b1.start()
        await until(lambda: reach(got3))
        upd = next(r.update for r in got3 if r.update and r.update.mp_reach)
        assert upd.get(AttrType.ORIGINATOR_ID).router_id == IPv4Address(B1)
        assert upd.get(AttrType.CLUSTER_LIST).cluster_ids == (IPv4Address(RR_ID),)
        for sp in (b1, b3):
            await sp.stop()
        await rr.stop()

    asyncio.run(main())


def _mac_routes(peer: RawPeer, mac: str) -> list[tuple[str, str]]:
    """("+"/"-", RD) of every route for ``mac`` the peer received, in order."""
    out = []
    for u in peer.updates():
        for sign, attr in (("+", u.mp_reach), ("-", u.mp_unreach)):
            out += [(sign, str(n.rd)) for n in (attr.nlri if attr else ())
                    if isinstance(n, MacIpRoute) and n.mac == mac]
    return out


def test_a_mobility_storm_freezes_the_mac_where_it_was():
    """b1 outbids b2's MAC again and again, b2 takes it back each time (as its gateway does when the
    host talks): at the fifth move the MAC is frozen at b2 (RFC 7432 15.1), b1's route for it is
    withdrawn and its next outbids are refused; b3 ends with b2's route only."""
    async def main():
        events = []

        async def hook(ev):
            events.append(ev)

        rr = RouteReflector(ASN, RR_ID, view=view(), on_security_event=hook)
        port = await rr.start("127.0.0.1", 0)
        b1, b2, b3 = [await RawPeer(port, ip).connect() for ip in (B1, B2, B3)]
        for p in (b1, b2, b3):
            await asyncio.wait_for(p.opened.wait(), 5)
        b2.send(t2(B2, M).encode())
        seq = 0
        for _ in range(4):  # b1, b2, b1, b2, then b1 once more: the fifth move
            for who, p in ((B1, b1), (B2, b2)):
                seq += 1
                p.send(t2(who, M, seq=seq).encode())
                await asyncio.sleep(0.02)
        await until(lambda: rr.status()["clients"][B1]["counters"].get("mac-flapping"), what="the freeze")
        await asyncio.sleep(0.1)
        routes = _mac_routes(b3, M)
        assert routes[-1] == ("+", f"{B2}:100") or routes[-1] == ("-", f"{B1}:100"), routes
        held = {str(h.nlri.rd) for c in rr.clients.values() for h in c.routes.values() if h.nlri.mac == M}
        assert held == {f"{B2}:100"}
        assert [e.reason for e in events if e.client == B1] == [Reason.MAC_FLAPPING]
        for p in (b1, b2, b3):
            await p.close()
        await rr.stop()

    asyncio.run(main())


def test_an_ip_in_use_elsewhere_is_taken_once_released():
    """b1 binds b2's host's IP to a MAC of its own: refused while b2 binds it; once b2 withdraws its
    binding (the host left), b1's is taken and reflected (a host that got the address)."""
    async def main():
        rr = RouteReflector(ASN, RR_ID, view=view())
        port = await rr.start("127.0.0.1", 0)
        b1, b2, b3 = [await RawPeer(port, ip).connect() for ip in (B1, B2, B3)]
        for p in (b1, b2, b3):
            await asyncio.wait_for(p.opened.wait(), 5)
        b2.send(t2(B2, M, "198.19.0.21").encode())
        await until(lambda: _mac_routes(b3, M))
        b1.send(t2(B1, "02:00:00:00:01:21", "198.19.0.21", seq=1000).encode())
        await until(lambda: rr.status()["clients"][B1]["counters"].get("ip-in-use-elsewhere") == 1)
        assert not _mac_routes(b3, "02:00:00:00:01:21")
        b2.send(Update.withdraw_evpn((mac_ip_route(rd(B2), M, "198.19.0.21", 100),)).encode())
        await until(lambda: _mac_routes(b3, "02:00:00:00:01:21") == [("+", f"{B1}:100")], what="b1's binding")
        for p in (b1, b2, b3):
            await p.close()
        await rr.stop()

    asyncio.run(main())

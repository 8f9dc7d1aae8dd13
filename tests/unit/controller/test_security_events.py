"""Security events on the controller: fed by the gateways (channel events of kind "security") and by the route
reflector (POST /api/v1/security-events, authenticated, typed, bounded), kept bounded per gateway, shown in
GET /api/v1/security-events and in the gateway's status."""

from __future__ import annotations

import asyncio

from controller.security_events import SecurityEvent, SecurityEvents
from tests.unit.controller.fake_gateways import TOKEN, RawGateway, device_site, ldevid_context, make_store, until


def test_the_record_is_bounded_whatever_the_senders_do():
    record = SecurityEvents(keep=4, max_reasons=3, max_gateways=2)
    for i in range(100):
        record.record("S1", SecurityEvent(ts=float(i), source="gateway", reason=f"r{i % 10}", count=2))
    counters, events = record.of("S1")
    assert [e.ts for e in events] == [96.0, 97.0, 98.0, 99.0]
    assert set(counters) == {"r0", "r1", "r2", "other"} and sum(counters.values()) == 200
    record.record("S2", SecurityEvent(ts=1.0, source="route-reflector", reason="foreign-rd", count=1))
    record.record("S3", SecurityEvent(ts=1.0, source="route-reflector", reason="foreign-rd", count=1))
    assert record.serials() == ["S2", "S3"] and record.counters["forgotten_gateways"] == 1


def test_events_from_the_gateway_and_the_reflector_reach_the_api(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from controller.api import make_app

    store = make_store(tmp_path / "ctl.db", {"acme": [("b1", "NSG-61"), ("b2", "NSG-62")]})
    b2_ip = str(store.gateways.get("b2").system_ip)

    async def main():
        async with device_site(store, tmp_path) as svc:
            b1 = RawGateway(svc, ldevid_context(svc, tmp_path / "certs", "NSG-61"), "NSG-61")
            await b1.connect()
            await b1.send({"type": "event", "ts": 100.0, "kind": "security",
                           "detail": {"reason": "duplicate-mac", "count": 3, "message": "02:00:00:00:00:01 on lan0",
                                      "mac": "02:00:00:00:00:01"}})
            await b1.send({"type": "event", "ts": 101.0, "kind": "security", "detail": {"reason": "Not A Reason"}})
            refused = await b1.recv()
            await until(lambda: svc.hub.counters["security_events"] == 1)
            app = make_app(store, tokens=lambda t: t == TOKEN, hub=svc.hub)
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                events = [{"gateway": "b1", "reason": "foreign-rd", "count": 7, "message": "RD 198.19.255.9:100",
                           "ts": 102.0},
                          {"system_ip": b2_ip, "reason": "mac-flapping", "ts": 103.0}]
                posted = await client.post("/api/v1/security-events", json={"source": "route-reflector",
                                                                             "events": events}, headers=auth)
                unauthenticated = await client.post("/api/v1/security-events", json={"events": events})
                bad = [await client.post("/api/v1/security-events", json=body, headers=auth) for body in (
                    {"events": [{"gateway": "nope", "reason": "x"}]},
                    {"events": [{"system_ip": "198.51.100.1", "reason": "x"}]},
                    {"events": [{"gateway": "b1", "reason": "x"}] * 257},
                    {"events": [{"reason": "x"}]},
                    {"events": [{"gateway": "b1", "reason": "x", "message": "m" * 513}]},
                    {"events": [{"gateway": "b1", "reason": "x", "count": 0}]})]
                listing = await (await client.get("/api/v1/security-events", headers=auth)).json()
                only_b2 = await (await client.get("/api/v1/security-events?gateway=b2", headers=auth)).json()
                status = await (await client.get("/api/v1/gateways/b1/status", headers=auth)).json()
                return refused, posted.status, await posted.json(), unauthenticated.status, [
                    (r.status, (await r.json())["error"]["field"]) for r in bad], listing, only_b2, status

    refused, posted, accepted, unauthenticated, bad, listing, only_b2, status = asyncio.run(main())
    assert refused["type"] == "error" and refused["code"] == "invalid" and "reason" in refused["message"]
    assert (posted, accepted, unauthenticated) == (200, {"accepted": 2}, 401)
    assert bad == [(400, "events[0].gateway"), (400, "events[0].system_ip"), (400, "events"), (400, "events[0]"),
                   (400, "events[0].message"), (400, "events[0].count")], bad
    assert listing["counters"] == {"b1": {"duplicate-mac": 3, "foreign-rd": 7}, "b2": {"mac-flapping": 1}}
    assert [(e["gateway"], e["source"], e["reason"]) for e in listing["events"]] == [
        ("b1", "gateway", "duplicate-mac"), ("b1", "route-reflector", "foreign-rd"),
        ("b2", "route-reflector", "mac-flapping")]
    assert only_b2["counters"] == {"b2": {"mac-flapping": 1}} and len(only_b2["events"]) == 1
    assert status["security"]["counters"] == {"duplicate-mac": 3, "foreign-rd": 7}
    assert [e["message"] for e in status["security"]["events"]] == ["02:00:00:00:00:01 on lan0", "RD 198.19.255.9:100"]
    store.close()

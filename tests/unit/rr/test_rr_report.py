"""The reflector's refusals reach the controller: controller/rr_report.py posts each security event to the
admin API (a real aiohttp server on loopback, urllib from a worker thread), where it shows for the
gateway that owns the reflector client's system IP; a controller that refuses is counted, not fatal."""

from __future__ import annotations

import asyncio

from controller.rr_check import Reason
from controller.rr_events import SecurityEvent
from controller.rr_report import ControllerReport
from tests.unit.controller.fake_gateways import TOKEN, make_store


def test_a_refusal_reaches_the_controller_as_a_security_event(tmp_path):
    from aiohttp.test_utils import TestServer

    from controller.api import make_app

    store = make_store(tmp_path / "ctl.db", {"acme": [("b1", "NSG-61"), ("b2", "NSG-62")]})
    b1_ip = str(store.gateways.get("b1").system_ip)
    ev = SecurityEvent(client=b1_ip, reason=Reason.FOREIGN_RD, count=12, example="RD 198.19.255.2:100 (b2's)",
                       first=1.0, last=2.0, ts=1700000000.0, name="b1")

    async def main():
        app = make_app(store, tokens=lambda t: t == TOKEN)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            url = f"http://127.0.0.1:{server.port}"
            good = ControllerReport(url, TOKEN)
            await good(ev)
            wrong_token = ControllerReport(url, "not-the-token")
            await wrong_token(ev)
            unknown = ControllerReport(url, TOKEN)
            await unknown(SecurityEvent(client="198.51.100.7", reason=Reason.FOREIGN_RD, count=1, example="x",
                                        first=0.0, last=0.0))
            listing = await asyncio.to_thread(good.client.call, "GET", "/security-events?gateway=b1")
            return good.counters, wrong_token.counters, unknown.counters, listing
        finally:
            await server.close()

    good, wrong_token, unknown, listing = asyncio.run(main())
    assert good == {"sent": 1, "failed": 0}
    assert wrong_token == {"sent": 0, "failed": 1} and unknown == {"sent": 0, "failed": 1}
    assert listing["counters"] == {"b1": {"foreign-rd": 12}}
    (event,) = listing["events"]
    assert event["source"] == "route-reflector" and event["ts"] == 1700000000.0
    assert event["message"] == "foreign-rd: 12 refused, e.g. RD 198.19.255.2:100 (b2's)"
    store.close()

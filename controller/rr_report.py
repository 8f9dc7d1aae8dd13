"""The route reflector's security events to the controller: each refusal summary (rr_events.SecurityEvent)
becomes one POST /api/v1/security-events, so it shows in the controller's API, `nsg-controller
security events` and the gateway's status, next to what the gateways themselves report.

The reflector is a separate process beside the hub; it reaches the admin API (loopback) with a
token of its own (`nsg-controller token create reflector`), read from a file. Sending runs in a
worker thread (urllib) and never blocks reflection: the reflector hands events over one by one
from its bounded queue, and an event the controller does not take is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging

from controller.api_client import Client, CliError

log = logging.getLogger("controller.rr")

MAX_MESSAGE = 512  # the API's limit for a security event's message


class ControllerReport:
    def __init__(self, url: str, token: str, timeout: float = 5.0):
        self.client = Client(url, token, timeout=timeout)
        self.counters = {"sent": 0, "failed": 0}

    def body(self, ev) -> dict:
        message = f"{ev.reason.value}: {ev.count} refused, e.g. {ev.example}"
        item = {"system_ip": ev.client, "reason": ev.reason.value, "count": max(1, ev.count),
                "message": message[:MAX_MESSAGE]}
        if ev.ts is not None:
            item["ts"] = ev.ts
        return {"source": "route-reflector", "events": [item]}

    async def __call__(self, ev) -> None:
        try:
            await asyncio.to_thread(self.client.call, "POST", "/security-events", self.body(ev))
        except CliError as exc:
            self.counters["failed"] += 1
            log.warning("security event not taken by the controller: %s", exc)
            return
        self.counters["sent"] += 1

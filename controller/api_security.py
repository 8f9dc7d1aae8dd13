"""The admin API's security events (controller/security_events.py keeps them): GET /api/v1/security-events
for operators, POST for the route reflector, which reports what it refused from each gateway. Routed by
controller/api.py's table; authenticated like every other route."""

from __future__ import annotations

import time

from aiohttp import web

from controller.api_http import SECURITY, STORE, ApiError, answer, read_body
from controller.api_models import SecurityEventList, SecurityEventsAccepted, SecurityEventsIn, _security_out
from controller.security_events import SecurityEvent
from controller.store import StoreError


async def list_security_events(request: web.Request) -> web.Response:
    """Security events about gateways: counts per gateway and reason, and the last events (?gateway=NAME)."""
    store, security = request.app[STORE], request.app[SECURITY]
    only = request.query.get("gateway")
    serials = [store.gateways.get(only).serial] if only is not None else security.serials()
    counters, events = {}, []
    for serial in serials:
        rec = store.gateways.by_serial(serial)
        name = rec.name if rec is not None else serial
        counts, kept = security.of(serial)
        counters[name] = counts
        events += [_security_out(name, e) for e in kept]
    return answer(SecurityEventList(counters=counters, events=sorted(events, key=lambda e: e.ts)))


async def post_security_events(request: web.Request) -> web.Response:
    """Record security events about gateways (the route reflector reports what it refused from each).
    Every event must name a gateway the controller knows (400 otherwise, and none is recorded)."""
    body: SecurityEventsIn = await read_body(request, SecurityEventsIn)
    store = request.app[STORE]
    by_ip = None
    named = []
    for i, event in enumerate(body.events):
        if event.gateway is not None:
            try:
                rec = store.gateways.get(event.gateway)
            except StoreError:
                raise ApiError(400, "invalid", f"no gateway {event.gateway!r}", f"events[{i}].gateway") from None
            if event.system_ip is not None and rec.system_ip != event.system_ip:
                raise ApiError(400, "invalid", f"gateway {rec.name!r} has system IP {rec.system_ip}, not "
                                               f"{event.system_ip}", f"events[{i}].system_ip")
        else:
            if by_ip is None:
                by_ip = {g.system_ip: g for e in store.enterprises.list() for g in store.gateways.list(e.name)}
            rec = by_ip.get(event.system_ip)
            if rec is None:
                raise ApiError(400, "invalid", f"no gateway has system IP {event.system_ip}", f"events[{i}].system_ip")
        named.append((rec, event))
    now = time.time()
    for rec, event in named:
        request.app[SECURITY].record(rec.serial, SecurityEvent(
            ts=event.ts if event.ts is not None else now, source=body.source, reason=event.reason,
            count=event.count, message=event.message), name=rec.name)
    return answer(SecurityEventsAccepted(accepted=len(named)))

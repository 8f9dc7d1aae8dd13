"""What the controller heard that someone attacks, or misbehaves inside, the overlay: per gateway, the
last events and a count per reason. Bounded whatever the senders do.

Two sources feed it: the gateways themselves (channel Event frames of kind "security": a duplicate MAC
on a LAN port, port security, ...; nsg.channel.wire.SecurityDetail) and the route reflector (routes a
gateway announced that are not its own, floods; POST /api/v1/security-events). Operators read it in
GET /api/v1/security-events, in the ``security`` section of a gateway's status and with
`nsg-controller security events [GATEWAY]`.

Kept in memory (a restart forgets it; the log has the first of each reason): per gateway a ring of the
last ``keep`` events and the counts of at most ``max_reasons`` reasons (later reasons count as
"other"), for at most ``max_gateways`` gateways (the one heard from least recently goes first).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.safe_text import safe

log = logging.getLogger("controller.security")

KEEP = 64  # events kept per gateway (the last ones)
MAX_REASONS = 64  # reasons counted per gateway; more are counted as OTHER
MAX_GATEWAYS = 4096
LOG_INTERVAL_S = 60.0  # one log line per gateway, source and reason per minute; the counts have the rest
OTHER = "other"
SOURCES = ("gateway", "route-reflector")


@dataclass(frozen=True)
class SecurityEvent:
    ts: float  # Unix time: when it happened (as the source says) or when we heard of it
    source: str  # one of SOURCES
    reason: str
    count: int  # how many times it happened (a source may sum up many in one event)
    message: str = ""


@dataclass
class _Gateway:
    events: deque[SecurityEvent]
    counters: dict[str, int] = field(default_factory=dict)
    logged: dict[tuple[str, str], float] = field(default_factory=dict)


class SecurityEvents:
    def __init__(self, *, keep: int = KEEP, max_reasons: int = MAX_REASONS, max_gateways: int = MAX_GATEWAYS,
                 log_interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.keep, self.max_reasons, self.max_gateways = keep, max_reasons, max_gateways
        self.log_interval_s, self.clock = log_interval_s, clock
        self._by_serial: dict[str, _Gateway] = {}
        self.counters = {"events": 0, "forgotten_gateways": 0}

    def record(self, serial: str, event: SecurityEvent, name: str | None = None) -> None:
        """One event about the gateway with this serial (``name`` only for the log line)."""
        gw = self._by_serial.pop(serial, None)
        if gw is None:
            gw = _Gateway(deque(maxlen=self.keep))
            while len(self._by_serial) >= self.max_gateways:
                del self._by_serial[next(iter(self._by_serial))]
                self.counters["forgotten_gateways"] += 1
        self._by_serial[serial] = gw  # most recently heard last
        gw.events.append(event)
        reason = event.reason if event.reason in gw.counters or len(gw.counters) < self.max_reasons else OTHER
        gw.counters[reason] = gw.counters.get(reason, 0) + event.count
        self.counters["events"] += 1
        now = self.clock()
        key = (event.source, reason)
        if now - gw.logged.get(key, float("-inf")) >= self.log_interval_s:
            if len(gw.logged) >= 2 * self.max_reasons:
                gw.logged.clear()
            gw.logged[key] = now
            log.warning("security event from the %s about %s: %s x%d: %s", event.source, safe(name or serial, 80),
                        safe(event.reason, 64), event.count, safe(event.message, 512),
                        extra={"fields": {"serial": safe(serial, 80), "source": event.source,
                                          "reason": safe(event.reason, 64), "count": event.count}})

    def of(self, serial: str) -> tuple[dict[str, int], list[SecurityEvent]]:
        """(counts per reason, the last events, oldest first) of one gateway."""
        gw = self._by_serial.get(serial)
        return ({}, []) if gw is None else (dict(gw.counters), list(gw.events))

    def serials(self) -> list[str]:
        return list(self._by_serial)

"""The route reflector's security events: refusals summarised per client and reason (``SecurityLog``,
sans-IO: ``now`` comes in), then stamped with the time and the client's name, logged, kept for
``status()``, and handed to the controller's hook (``rr_report.ControllerReport``) one at a time from
a bounded queue, so that a slow or absent controller never holds up reflection (``EventDesk``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from bgp.attributes import Ipv4Prefix
from bgp.evpn_nlri import EvpnRoute, InclusiveMulticastRoute, IpPrefixRoute, MacIpRoute
from controller.rr_check import Reason

log = logging.getLogger("controller.rr")

OUTBOX = 1024  # security events waiting for the controller's hook; the oldest go first when full
RECENT = 256  # events status() can show


def describe(nlri: object) -> str:
    """One route for a log line or a security event."""
    if isinstance(nlri, MacIpRoute):
        return f"type-2 rd {nlri.rd} vni {nlri.vni} mac {nlri.mac}" + (f" ip {nlri.ip}" if nlri.ip else "")
    if isinstance(nlri, InclusiveMulticastRoute):
        return f"type-3 rd {nlri.rd} originator {nlri.originator}"
    if isinstance(nlri, IpPrefixRoute):
        return f"type-5 rd {nlri.rd} {nlri.prefix}/{nlri.prefix_len} via {nlri.gateway} vni {nlri.label}"
    if isinstance(nlri, EvpnRoute):
        return f"EVPN type {nlri.route_type}"
    if isinstance(nlri, Ipv4Prefix):
        return f"IPv4 {nlri.network}"
    return repr(nlri)[:120]


@dataclass(frozen=True)
class SecurityEvent:
    """A client's refusals for one reason since the last event of that pair: what the operator and the
    controller see of them (one line each, not one per refused route)."""

    client: str
    reason: Reason
    count: int  # refusals since the last event of this client and reason
    example: str
    first: float  # loop time of the first and the last of them
    last: float
    ts: float | None = None  # Unix time, stamped by the reflector when it publishes the event
    name: str | None = None  # the client's name in the view

    def as_dict(self) -> dict:
        return {"client": self.client, "name": self.name, "reason": self.reason.value, "count": self.count,
                "example": self.example, "ts": self.ts, "span_s": round(self.last - self.first, 3)}


@dataclass
class _Pending:
    emitted: float
    count: int = 0
    example: str = ""
    first: float = 0.0
    last: float = 0.0


class SecurityLog:
    """Refusals per (client, reason) as events: the first at once, then one summary per ``interval``
    with the count since. The recent events stay in ``recent`` (bounded)."""

    MAX_KEYS = 4096

    def __init__(self, interval: float = 10.0, keep: int = 256):
        self.interval = interval
        self.recent: deque[SecurityEvent] = deque(maxlen=keep)
        self._pending: dict[tuple[str, Reason], _Pending] = {}

    def note(self, client: str, reason: Reason, count: int, example: str, now: float) -> list[SecurityEvent]:
        key = (client, reason)
        p = self._pending.get(key)
        if p is None:
            if len(self._pending) >= self.MAX_KEYS:
                self._pending.pop(next(iter(self._pending)))
            self._pending[key] = _Pending(emitted=now)
            return self._emit([SecurityEvent(client, reason, count, example, now, now)])
        if not p.count:
            p.example, p.first = example, now
        p.count += count
        p.last = now
        return self.flush(now, only=key)

    def flush(self, now: float, only: tuple[str, Reason] | None = None) -> list[SecurityEvent]:
        out = []
        for key in [only] if only is not None else list(self._pending):
            p = self._pending[key]
            if now - p.emitted < self.interval:
                continue
            if p.count:
                out.append(SecurityEvent(key[0], key[1], p.count, p.example, p.first, p.last))
                p.emitted, p.count = now, 0
            elif only is None:
                del self._pending[key]  # quiet for a whole interval: the next one is news again
        return self._emit(out)

    def _emit(self, events: Iterable[SecurityEvent]) -> list[SecurityEvent]:
        events = list(events)
        self.recent.extend(events)
        return events


SecurityHook = Callable[[SecurityEvent], Awaitable[None]]


class EventDesk:
    """Notes refusals, publishes their summaries, forwards them to ``hook``. ``name_of`` gives a
    client's name in the current view (or None); ``counters`` is the reflector's (events_dropped)."""

    def __init__(self, hook: SecurityHook | None, name_of: Callable[[str], str | None],
                 counters: dict[str, int]) -> None:
        self.hook = hook
        self.name_of = name_of
        self.counters = counters
        self.security = SecurityLog()
        self.recent: deque[SecurityEvent] = deque(maxlen=RECENT)
        self._outbox: deque[SecurityEvent] = deque(maxlen=OUTBOX)
        self._wake = asyncio.Event()

    def note(self, client: str, reason: Reason, count: int, example: str) -> None:
        """``count`` refusals of ``client`` for ``reason``: an event now or in the next summary."""
        now = asyncio.get_running_loop().time()
        self.publish(self.security.note(client, reason, count, example, now))

    def flush(self, now: float) -> None:
        """The summaries that are due (housekeeping)."""
        self.publish(self.security.flush(now))

    def publish(self, events: list[SecurityEvent]) -> None:
        for ev in events:
            name = self.name_of(ev.client)
            ev = replace(ev, ts=time.time(), name=name)  # noqa: PLW2901 -- the stamped one goes on
            self.recent.append(ev)
            log.warning("BGP client %s%s: %s x%d (e.g. %s)", ev.client, f" ({name})" if name else "",
                        ev.reason.value, ev.count, ev.example)
            if self.hook is not None:
                if len(self._outbox) == self._outbox.maxlen:
                    self.counters["events_dropped"] += 1
                self._outbox.append(ev)
                self._wake.set()

    async def forward(self) -> None:
        """Hand the security events to the controller's hook, one at a time, in order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox and self.hook is not None:
                ev = self._outbox.popleft()
                try:
                    await self.hook(ev)
                except Exception as exc:  # noqa: BLE001 -- whatever the transport raises, reflection goes on
                    log.warning("security event not delivered: %s", exc)

"""Who gets an LDevID (the EST authorizer's lookup).

One enrolled identity per box: a first enrollment (/simpleenroll, with the IDevID) is refused while
the store records a valid (unexpired, unrevoked) LDevID for that serial, until the operator resets the
box (`nsg-controller gateway reset-identity NAME` revokes its LDevIDs). Renewal is /simplereenroll
with the current LDevID. Otherwise anyone holding a copy of a box's IDevID could mint a second,
equally valid identity for it.

Activation codes (the second factor of zero-touch): a gateway whose record carries a code gets
no LDevID until it presents that code (EST HTTP Basic: serial / code). Wrong codes are rate
limited per serial: after MAX_FAILURES within WINDOW_S, even the right code waits out the window."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from controller.est_server import OP_SIMPLEENROLL, AuthContext, EstDenied, Grant, Pending
from controller.store import Store

MAX_FAILURES = 5
WINDOW_S = 900.0
RETRY_S = 10  # how often a waiting gateway asks again
LDEVID_LIFETIME = datetime.timedelta(days=90)


class ActivationGate:
    def __init__(self, store: Store, *, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, lifetime: datetime.timedelta = LDEVID_LIFETIME):
        self.store = store
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.lifetime = lifetime
        self.failures: dict[str, list[float]] = {}
        self.counters = {"waiting": 0, "wrong_codes": 0, "locked": 0, "granted": 0, "identity_held": 0}

    def locked(self, serial: str) -> bool:
        now = self.clock()
        recent = [t for t in self.failures.get(serial, []) if now - t < self.window_s]
        self.failures[serial] = recent
        return len(recent) >= self.max_failures

    def identity_held(self, serial: str) -> str:
        """The refusal of a second identity (counted), naming what the operator can do about it."""
        self.counters["identity_held"] += 1
        rec = self.store.gateways.by_serial(serial)
        name = rec.name if rec is not None else "NAME"
        return ("this box already has an identity; reset it at the controller: "
                f"nsg-controller gateway reset-identity {name}")

    def lookup(self, serial: str, ctx: AuthContext) -> Grant | Pending | None:
        """The EST authorizer's question: may this known serial have a certificate now?"""
        rec = self.store.gateways.by_serial(serial)
        if rec is None:
            return None
        if ctx.operation == OP_SIMPLEENROLL and self.store.certificates.holds_identity(serial):
            raise EstDenied(403, self.identity_held(serial))
        if rec.has_activation_code and ctx.operation == OP_SIMPLEENROLL:
            if self.locked(serial):
                self.counters["locked"] += 1
                return Pending(retry_after=int(self.window_s))
            code = ctx.basic[1] if ctx.basic and ctx.basic[0] == serial else None
            if code is None:
                self.counters["waiting"] += 1
                return Pending(retry_after=RETRY_S)  # "activation required"
            if not self.store.gateways.check_activation(serial, code):
                self.counters["wrong_codes"] += 1
                self.failures.setdefault(serial, []).append(self.clock())
                return Pending(retry_after=RETRY_S)
        self.counters["granted"] += 1
        return Grant(self.lifetime, rec.system_ip)

"""Security Association Database: child SAs with lifetimes, looked up by the engines.

The engine thread reads two dicts (inbound by SPI, outbound by peer inner address)
on every packet; the control plane never mutates them in place but swaps in new
dicts, so the engine needs no lock (a reference assignment is atomic in CPython).

Make-before-break rekey (RFC 7296 2.8): install the new pair (both inbound SAs are
then accepted), switch outbound to the new SA, and delete the old inbound SA a
little later, when the peer has switched too.

Time comes from outside: each entry says when it was installed (``created``, by the
caller), and ``expiries`` takes ``now``. Both are readings of the SAD's ``clock``
(monotonic seconds), which tests replace to move time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ipsec.esp import InboundSA, OutboundSA


@dataclass(frozen=True)
class Lifetime:
    """Soft and hard limits; 0 means no limit (RFC 4301 4.4.2.1)."""

    soft_s: float = 0
    hard_s: float = 0
    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0

    def __post_init__(self) -> None:
        for kind in ("s", "bytes", "packets"):
            soft, hard = getattr(self, f"soft_{kind}"), getattr(self, f"hard_{kind}")
            if soft < 0 or hard < 0:
                raise ValueError(f"lifetime {kind} must not be negative")
            if soft and hard and soft > hard:
                raise ValueError(f"soft lifetime ({soft} {kind}) exceeds the hard one ({hard})")


class Expiry(Enum):
    OK = "ok"
    SOFT = "soft"
    HARD = "hard"


def expiry(lt: Lifetime, age_s: float, octets: int, packets: int) -> Expiry:
    def over(limit: float, value: float) -> bool:
        return bool(limit) and value >= limit

    if over(lt.hard_s, age_s) or over(lt.hard_bytes, octets) or over(lt.hard_packets, packets):
        return Expiry.HARD
    if over(lt.soft_s, age_s) or over(lt.soft_bytes, octets) or over(lt.soft_packets, packets):
        return Expiry.SOFT
    return Expiry.OK


@dataclass
class Endpoint:
    """Where ESP-in-UDP for a peer goes: address, port, and which local socket sends it."""

    host: str
    port: int = 4500
    socket: int = 0


@dataclass
class Inbound:
    sa: InboundSA
    peer: bytes  # the peer's inner address (4 octets): inner packets must come from it (RFC 4301 5.2)
    lifetime: Lifetime
    created: float  # when it was installed (Sad.clock): its age counts from here


@dataclass
class Outbound:
    sa: OutboundSA
    endpoint: Endpoint
    lifetime: Lifetime
    created: float  # when it was installed (Sad.clock): its age counts from here


class Sad:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.inbound: dict[int, Inbound] = {}
        self.outbound: dict[bytes, Outbound] = {}

    def add_inbound(self, entry: Inbound) -> None:
        if entry.sa.spi in self.inbound:
            raise ValueError(f"inbound SPI {entry.sa.spi:#010x} is already installed")
        new = dict(self.inbound)
        new[entry.sa.spi] = entry
        self.inbound = new

    def remove_inbound(self, spi: int) -> Inbound | None:
        if spi not in self.inbound:
            return None
        new = dict(self.inbound)
        gone = new.pop(spi)
        self.inbound = new
        return gone

    def set_outbound(self, peer: bytes, entry: Outbound) -> Outbound | None:
        """Install or replace (rekey) the outbound SA toward a peer; returns the old one."""
        new = dict(self.outbound)
        old = new.get(peer)
        new[peer] = entry
        self.outbound = new
        return old

    def remove_outbound(self, peer: bytes) -> Outbound | None:
        if peer not in self.outbound:
            return None
        new = dict(self.outbound)
        gone = new.pop(peer)
        self.outbound = new
        return gone

    def expiries(self, now: float | None = None) -> list[tuple[str, int, Expiry]]:
        """(direction, SPI, state) for every SA past a soft or hard limit at ``now`` (default: the clock's)."""
        now = self.clock() if now is None else now
        out = []
        for spi, e in self.inbound.items():
            c = e.sa.counters
            state = expiry(e.lifetime, now - e.created, c.bytes, c.packets)
            if state is not Expiry.OK:
                out.append(("in", spi, state))
        for o in self.outbound.values():
            c = o.sa.counters
            state = expiry(o.lifetime, now - o.created, c.bytes, c.packets)
            if state is not Expiry.OK:
                out.append(("out", o.sa.spi, state))
        return out

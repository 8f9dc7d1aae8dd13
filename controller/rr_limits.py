"""A client's route limit over time (``rr_check.Limits``): a warning as its Adj-RIB-In nears the limit,
the session torn down once it stays over the limit too long or by too much (RFC 4486 Cease, Maximum
Number of Prefixes Reached), and its reconnects refused for a back-off time after that. rr_check.py
refuses each route beyond the limit; this is what the refusals add up to for the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bgp.constants import Afi, CeaseSubcode, Safi
from controller.rr_check import Limits, Reason
from controller.rr_client import Client

log = logging.getLogger("controller.rr")

Note = Callable[[str, Reason, int, str], None]  # client, reason, count, example: a security event
Close = Callable[[Client, int, str, bytes], None]  # client, Cease subcode, why, NOTIFICATION data


class LimitGuard:
    def __init__(self, limits: Limits, note: Note, close: Close) -> None:
        self.limits = limits
        self.note = note
        self.close = close
        self._penalty: dict[str, float] = {}  # address -> loop time until which its reconnects are refused

    @property
    def backoff(self) -> list[str]:
        """Addresses whose reconnects are refused now."""
        return sorted(self._penalty)

    def backoff_left(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may connect again, or None if it may now."""
        until = self._penalty.get(address)
        if until is not None and now < until:
            return until - now
        self._penalty.pop(address, None)
        return None

    def prune(self, now: float) -> None:
        for address, until in list(self._penalty.items()):
            if until <= now:
                del self._penalty[address]

    def watch_size(self, client: Client) -> None:
        """After each change of its Adj-RIB-In: warn once per crossing of the warning share; below the
        limit again, its over-limit record starts afresh."""
        size, limit = len(client.routes), client.state.max_routes
        if size >= limit * self.limits.warn_fraction and not client.warned:
            client.warned = True
            log.warning("BGP client %s holds %d routes, %d%% of its limit of %d", client.address, size,
                        100 * size // limit, limit)
        elif size < limit * self.limits.warn_fraction * 0.9:
            client.warned = False
        if size < limit:
            client.over_since, client.excess = None, 0

    def over(self, client: Client, count: int, now: float) -> None:
        """``count`` routes of ``client`` were just refused for being beyond its limit."""
        client.excess += count
        if client.over_since is None:
            client.over_since = now
        self.check_over(client, now)

    def check_over(self, client: Client, now: float) -> None:
        """Over the limit for too long, or by too much: the session goes (RFC 4486 Cease, Maximum
        Number of Prefixes Reached, with AFI/SAFI and the limit as data) and its reconnects are
        refused for a while."""
        if client.over_since is None or client.closing:
            return
        if client.excess < self.limits.over_excess and now - client.over_since < self.limits.over_grace:
            return
        limit = client.state.max_routes
        data = Afi.L2VPN.to_bytes(2, "big") + bytes((Safi.EVPN,)) + min(limit, (1 << 32) - 1).to_bytes(4, "big")
        self._penalty[client.address] = now + self.limits.backoff
        self.note(client.address, Reason.MAX_ROUTES_TEARDOWN, 1,
                  f"{client.excess} routes beyond {limit} over {now - client.over_since:.1f} s")
        self.close(client, CeaseSubcode.MAX_PREFIXES, f"over its limit of {limit} routes", data)

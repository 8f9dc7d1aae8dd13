"""What one client may hold of the device site: its connections and how long they may idle.

The device site (SZTP, EST, the channel, images: controller/services.py) faces every box on the WAN and
shares its process, and so its file descriptors, with the admin API. Without limits one client could hold
a connection open for ever by sending a request head one byte at a time, or by sending nothing, and open
as many as the process has descriptors. So, per connection (est_server.TlsSite applies them):

- **head timeout**: the TLS handshake and a request's head (up to the blank line) must be in within
  ``header_timeout_s`` of the connection opening, or of the first octet of a next request on it;
- **idle timeout**: a connection that carries no octet either way for ``idle_timeout_s`` is closed (the
  channel sends a WebSocket ping every 10 s, so a live gateway is never idle);
- **per identity**: at most ``max_per_identity`` connections at once per client certificate (by its
  serial number), and at most ``max_per_address`` per source address while a connection has no
  certificate (during the handshake, or a client that presents none);
- **per site**: at most ``max_connections`` in all, kept below the process's descriptor limit.

What is refused or closed is counted (``counters``) and logged at most once a minute per kind.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from controller.safe_text import safe

log = logging.getLogger("controller.site")

CONN_INFO = "nsg_site_connection"  # the transport extra (get_extra_info) that carries a connection's _Conn
FD_RESERVE = 256  # descriptors left to the admin API, the store and the log when the site is full
LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class SiteLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_per_identity: int = 8
    max_per_address: int = 64
    max_connections: int = 4096

    def __post_init__(self) -> None:
        for name, low, high in (("header_timeout_s", 0.05, 3600), ("idle_timeout_s", 0.05, 86400)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} {getattr(self, name):g}: give {low:g} to {high:g} seconds")
        for name in ("max_per_identity", "max_per_address", "max_connections"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name} {getattr(self, name)}: give 1 to 1000000")


HEAD, REQUEST, IDLE = "head", "request", "idle"


class _Conn:
    """One connection's state: waiting for a head (with a deadline), in a request, or idle between two."""

    def __init__(self, guard: SiteGuard, address: str, abort: Callable[[], None]):
        self.guard, self.address, self.abort_transport = guard, address, abort
        self.identity: str | None = None
        now = guard.loop.time()
        self.state, self.head_deadline, self.last = HEAD, now + guard.limits.header_timeout_s, now
        self.closed = False
        self.counted = True  # in the guard's tables until lost()
        self._timer: asyncio.TimerHandle | None = guard.loop.call_at(self.head_deadline, self._check)

    def received(self) -> None:
        self.last = self.guard.loop.time()
        if self.state == IDLE:  # the first octet of a next request: its head has the head timeout
            self.state, self.head_deadline = HEAD, self.last + self.guard.limits.header_timeout_s
            self._schedule(self.head_deadline)

    def sent(self) -> None:
        self.last = self.guard.loop.time()

    def request_started(self) -> None:
        self.state = REQUEST

    def request_done(self) -> None:
        self.state, self.last = IDLE, self.guard.loop.time()

    def _schedule(self, when: float) -> None:
        if self._timer is not None and self._timer.when() <= when:
            return  # the earlier check reschedules itself
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.guard.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.guard.loop.time()
        limits = self.guard.limits
        if self.state == HEAD and now >= self.head_deadline:
            self.guard.close(self, "header_timeouts", f"no complete request head within {limits.header_timeout_s:g} s")
        elif now >= self.last + limits.idle_timeout_s:
            self.guard.close(self, "idle_timeouts", f"idle for {limits.idle_timeout_s:g} s")
        else:
            due = self.last + limits.idle_timeout_s
            self._schedule(min(due, self.head_deadline) if self.state == HEAD else due)

    def forget(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SiteGuard:
    def __init__(self, limits: SiteLimits | None = None, *, loop: asyncio.AbstractEventLoop | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = limits or SiteLimits()
        self._loop = loop
        self.clock = clock
        self.max_connections = self.limits.max_connections
        self.connections = 0
        self.by_address: dict[str, int] = {}
        self.by_identity: dict[str, int] = {}
        self.counters = {"header_timeouts": 0, "idle_timeouts": 0, "over_identity_limit": 0,
                         "over_address_limit": 0, "over_site_limit": 0}
        self._logged: dict[str, float] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def fit_descriptors(self) -> int:
        """Raise this process's open-files limit to its hard limit, and keep the site's connections
        FD_RESERVE below it (the admin API and the store keep theirs). The site's limit, as it is now."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        if soft != resource.RLIM_INFINITY:
            self.max_connections = max(1, min(self.limits.max_connections, soft - FD_RESERVE))
        return self.max_connections

    # -- accounting ------------------------------------------------------------------------------

    def opened(self, address: str, abort: Callable[[], None]) -> _Conn | None:
        """A TCP connection was accepted: its _Conn, or None when it is one too many (the caller drops it)."""
        if self.connections >= self.max_connections:
            self._refused("over_site_limit", f"{self.max_connections} connections open on the site", address)
            return None
        if self.by_address.get(address, 0) >= self.limits.max_per_address:
            self._refused("over_address_limit", f"{self.limits.max_per_address} connections without a client "
                                                f"certificate from {safe(address, 60)}", address)
            return None
        self.connections += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return _Conn(self, address, abort)

    def authenticated(self, conn: _Conn, identity: str | None) -> bool:
        """The handshake is done; ``identity`` is the client certificate's serial number (None: no
        certificate, it stays counted by address). False: one connection too many of that identity."""
        if identity is None:
            return True
        if self.by_identity.get(identity, 0) >= self.limits.max_per_identity:
            self._refused("over_identity_limit", f"{self.limits.max_per_identity} connections of client "
                                                 f"certificate {safe(identity, 60)}", conn.address)
            return False
        self._release_address(conn)
        conn.identity = identity
        self.by_identity[identity] = self.by_identity.get(identity, 0) + 1
        return True

    def lost(self, conn: _Conn) -> None:
        conn.forget()
        if not conn.counted:
            return
        conn.counted = False
        self.connections -= 1
        if conn.identity is not None:
            self.by_identity[conn.identity] -= 1
            if not self.by_identity[conn.identity]:
                del self.by_identity[conn.identity]
        else:
            self._release_address(conn)

    def _release_address(self, conn: _Conn) -> None:
        left = self.by_address.get(conn.address, 0) - 1
        if left > 0:
            self.by_address[conn.address] = left
        else:
            self.by_address.pop(conn.address, None)

    def close(self, conn: _Conn, counter: str, why: str) -> None:
        self.counters[counter] += 1
        self._log(counter, f"device site: connection from {safe(conn.address, 60)} closed: {why}")
        conn.forget()
        conn.abort_transport()

    def _refused(self, counter: str, why: str, address: str) -> None:
        self.counters[counter] += 1
        self._log(counter, f"device site: connection from {safe(address, 60)} refused: {why}")

    def _log(self, kind: str, line: str) -> None:
        now = self.clock()
        if now - self._logged.get(kind, float("-inf")) >= LOG_INTERVAL_S:
            self._logged[kind] = now
            log.warning("%s (%s so far; at most one such line a minute)", line, self.counters[kind])

    # -- the request side ------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Marks a connection busy while a request is handled (its head is in: no head timeout)."""
        conn = request.transport.get_extra_info(CONN_INFO) if request.transport is not None else None
        if not isinstance(conn, _Conn):
            return await handler(request)
        conn.request_started()
        try:
            return await handler(request)
        finally:
            conn.request_done()

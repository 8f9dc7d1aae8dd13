"""The one asyncio driver of IKE: sockets and timers around the sans-IO IkeManager.

UDP 500 is our own socket; UDP 4500 is shared with the ESP engine, which passes
datagrams with the non-ESP marker up (from its thread, via call_soon_threadsafe)
and sends ours with the marker. Child SA commands go to an installer that
programs the engine's SAD (or the kernel, with the XFRM backend).

Log lines that remote input causes (refused or dropped unauthenticated datagrams, sends that
fail while the WAN is down) go through a LogSummariser: the first few are logged in full, by
the datagram's real source address, then one summary per window. Counters keep every one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Protocol

from ipsec.ike import events as ev
from ipsec.ike.manager import IkeManager, Rejected, Tagged
from ipsec.logsummary import LogSummariser, Summary

log = logging.getLogger("ipsec.ike")

SEND_FAILED = "failed IKE sends"  # the summariser's kind for sendto errors
DROPPED = "dropped IKE datagrams"


def errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__


class Installer(Protocol):
    def install(self, peer: str, child: ev.ChildSa, outbound: bool) -> None: ...
    def activate(self, peer: str, child_id: int) -> None: ...
    def remove(self, peer: str, child_id: int, in_spi: int, out_spi: int) -> None: ...


class NatTransport(Protocol):
    """Port 4500: the ESP engine's socket (userspace) or a UDP_ENCAP socket (XFRM). Sends
    raise OSError as sendto does (ENETUNREACH while the WAN is down); the driver counts it."""

    def send_ike(self, message: bytes, peer: tuple[str, int], sock: int = 0) -> None: ...
    def send_keepalive(self, peer: tuple[str, int], sock: int = 0) -> None: ...


class _Port500(asyncio.DatagramProtocol):
    def __init__(self, driver: IkeDriver):
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.driver.datagram(data, addr, 500)

    def error_received(self, exc: Exception) -> None:
        # asyncio reports a failed sendto here instead of raising it (and receive errors, which an
        # unconnected UDP socket does not get without IP_RECVERR)
        if isinstance(exc, OSError):
            self.driver.send_failed(exc, None)


class IkeDriver:
    def __init__(self, manager: IkeManager, nat: NatTransport, installer: Installer, local_ip: str,
                 on_event: Callable[[str, ev.Command], None] | None = None, port: int = 500,
                 log_summary: LogSummariser | None = None):
        self.manager = manager
        self.nat = nat
        self.installer = installer
        self.local_ip = local_ip
        self.port = port
        self.on_event = on_event
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._t500: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # and "send_errors.<errno name>" per kind of failed send
        self.counters = {"rx": 0, "tx": 0, "install_errors": 0}
        self.log_summary = log_summary or LogSummariser()
        self._summary_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t500, _ = await self._loop.create_datagram_endpoint(
            lambda: _Port500(self), local_addr=(self.local_ip, self.port), reuse_port=False)

    def from_engine_thread(self, data: bytes, addr: tuple[str, int], _sock: int) -> None:
        """The engine's on_ike callback (runs in the engine thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.datagram, data, addr, 4500)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def close(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
            self._log_summaries()  # what was held back is still told
        if self._t500 is not None:
            self._t500.close()

    # --- events into the manager ---------------------------------------------------------

    def datagram(self, data: bytes, addr: tuple[str, int], local_port: int) -> None:
        self.counters["rx"] += 1
        self.apply(self.manager.datagram(data, addr, local_port))

    def _fire(self, peer: str, name: str) -> None:
        self._timers.pop((peer, name), None)
        self.apply(self.manager.timer(peer, name))

    # --- commands out ------------------------------------------------------------------------

    def apply(self, tagged: list[Tagged]) -> None:
        for peer, c in tagged:
            match c:
                case ev.Send(data, dst, port):
                    self.counters["tx"] += 1
                    if port == 4500:
                        self._send(self.nat.send_ike, data, dst)
                    elif self._t500 is not None:
                        self._t500.sendto(data, dst)  # errors come to _Port500.error_received
                case ev.SetTimer(name, delay):
                    old = self._timers.pop((peer, name), None)
                    if old is not None:
                        old.cancel()
                    self._timers[(peer, name)] = self._get_loop().call_later(delay, self._fire, peer, name)
                case ev.CancelTimer(name):
                    h = self._timers.pop((peer, name), None)
                    if h is not None:
                        h.cancel()
                case ev.InstallChild(child, outbound):
                    self._guard("install", peer, self.installer.install, peer, child, outbound)
                case ev.ActivateChild(cid):
                    self._guard("activate", peer, self.installer.activate, peer, cid)
                case ev.RemoveChild(cid, in_spi, out_spi):
                    self._guard("remove", peer, self.installer.remove, peer, cid, in_spi, out_spi)
                case ev.SendKeepalive(dst):
                    self._send(self.nat.send_keepalive, dst)
                case ev.Established():
                    log.info("IKE SA established", extra={"fields": {"peer": peer, "remote_id": c.remote_id,
                                                                     "rekeyed": c.rekeyed, "nat_local": c.nat_local,
                                                                     "nat_remote": c.nat_remote}})
                case ev.Closed(reason, fault):
                    level = logging.INFO if fault == "none" else logging.WARNING
                    log.log(level, "IKE SA closed: %s", reason, extra={"fields": {"peer": peer, "fault": fault}})
                case Rejected():
                    self._rejected(c)
                    continue  # no peering's event
            if self.on_event is not None:
                self.on_event(peer, c)

    # --- remote input and failed sends: counted always, logged a few at a time -----------------

    def _send(self, send: Callable[..., None], *args: object) -> None:
        """A send that fails (the WAN is down: ENETUNREACH, EHOSTUNREACH; nftables: EPERM) is lost
        like a datagram on the way: the exchange's retransmit timer (or DPD) tries again."""
        try:
            send(*args)
        except OSError as exc:
            dst = args[-1]
            self.send_failed(exc, dst if isinstance(dst, tuple) else None)

    def send_failed(self, exc: OSError, dst: ev.Address | None) -> None:
        name = errno_name(exc)
        key = f"send_errors.{name}"
        self.counters[key] = self.counters.get(key, 0) + 1
        where = f"{dst[0]}:{dst[1]}" if dst else "?"
        if self.log_summary.note(SEND_FAILED, dst[0] if dst else "?", self._get_loop().time(), reason=name):
            log.warning("IKE send to %s failed: %s (%s); retransmission will try again", where, name,
                        exc.strerror or exc, extra={"fields": {"dst": where, "errno": name}})
        self._arm_summaries()

    def _rejected(self, r: Rejected) -> None:
        src = f"{r.src[0]}:{r.src[1]}"
        fields = {"src": src, "exchange": r.exchange, "reason": r.reason}
        now = self._get_loop().time()
        if r.answered:
            if self.log_summary.note(f"refused {r.exchange}", r.src[0], now, reason=r.reason):
                log.warning("refused %s from %s: %s (%s)", r.exchange, src, r.reason, r.detail,
                            extra={"fields": fields})
        elif self.log_summary.note(DROPPED, r.src[0], now, reason=r.reason):
            log.info("dropped %s datagram from %s: %s", r.exchange, src, r.detail, extra={"fields": fields})
        self._arm_summaries()

    def _arm_summaries(self) -> None:
        due = self.log_summary.next_due()
        if due is None or self._summary_timer is not None:
            return
        loop = self._get_loop()
        self._summary_timer = loop.call_later(max(0.0, due - loop.time()), self._summaries_due)

    def _summaries_due(self) -> None:
        self._summary_timer = None
        self._log_summaries()
        self._arm_summaries()

    def _log_summaries(self) -> None:
        for s in self.log_summary.due(self._get_loop().time()):
            level = logging.INFO if s.what == DROPPED else logging.WARNING
            log.log(level, s.text(), extra={"fields": _summary_fields(s)})

    def _guard(self, what: str, peer: str, action: Callable[..., None], *args: object) -> None:
        try:
            action(*args)
        except (ValueError, KeyError, OSError, RuntimeError) as exc:  # RuntimeError: XfrmError
            self.counters["install_errors"] += 1
            log.error("child SA %s failed: %s", what, exc, extra={"fields": {"peer": peer}})


def _summary_fields(s: Summary) -> dict:
    return {"summary": s.what, "count": s.count, "addresses": s.addresses, "window_s": s.window,
            "reasons": dict(s.reasons)}

"""The one asyncio driver of IKE: sockets and timers around the sans-IO IkeManager.

UDP 500 is our own socket; UDP 4500 is shared with the ESP engine, which passes
datagrams with the non-ESP marker up (from its thread, via call_soon_threadsafe)
and sends ours with the marker. Child SA commands go to an installer that
programs the engine's SAD (or the kernel, with the XFRM backend).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ipsec.ike import events as ev
from ipsec.ike.manager import IkeManager, Tagged

log = logging.getLogger("ipsec.ike")


class Installer(Protocol):
    def install(self, peer: str, child: ev.ChildSa, outbound: bool) -> None: ...
    def activate(self, peer: str, child_id: int) -> None: ...
    def remove(self, peer: str, child_id: int, in_spi: int, out_spi: int) -> None: ...


class NatTransport(Protocol):
    """Port 4500: the ESP engine's socket (userspace) or a UDP_ENCAP socket (XFRM)."""

    def send_ike(self, message: bytes, peer: tuple[str, int], sock: int = 0) -> None: ...
    def send_keepalive(self, peer: tuple[str, int], sock: int = 0) -> None: ...


class _Port500(asyncio.DatagramProtocol):
    def __init__(self, driver: IkeDriver):
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.driver.datagram(data, addr, 500)

    def error_received(self, exc: Exception) -> None:
        log.debug("port 500: %s", exc)


class IkeDriver:
    def __init__(self, manager: IkeManager, nat: NatTransport, installer: Installer, local_ip: str,
                 on_event: Callable[[str, ev.Command], None] | None = None, port: int = 500):
        self.manager = manager
        self.nat = nat
        self.installer = installer
        self.local_ip = local_ip
        self.port = port
        self.on_event = on_event
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._t500: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = {"rx": 0, "tx": 0, "install_errors": 0}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t500, _ = await self._loop.create_datagram_endpoint(
            lambda: _Port500(self), local_addr=(self.local_ip, self.port), reuse_port=False)

    def from_engine_thread(self, data: bytes, addr: tuple[str, int], _sock: int) -> None:
        """The engine's on_ike callback (runs in the engine thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.datagram, data, addr, 4500)

    def close(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
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
                        self.nat.send_ike(data, dst)
                    elif self._t500 is not None:
                        self._t500.sendto(data, dst)
                case ev.SetTimer(name, delay):
                    old = self._timers.pop((peer, name), None)
                    if old is not None:
                        old.cancel()
                    assert self._loop is not None
                    self._timers[(peer, name)] = self._loop.call_later(delay, self._fire, peer, name)
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
                    self.nat.send_keepalive(dst)
                case ev.Established():
                    log.info("IKE SA established", extra={"fields": {"peer": peer, "remote_id": c.remote_id,
                                                                     "rekeyed": c.rekeyed, "nat_local": c.nat_local,
                                                                     "nat_remote": c.nat_remote}})
                case ev.Closed(reason, fault):
                    level = logging.INFO if fault == "none" else logging.WARNING
                    log.log(level, "IKE SA closed: %s", reason, extra={"fields": {"peer": peer, "fault": fault}})
            if self.on_event is not None:
                self.on_event(peer, c)

    def _guard(self, what: str, peer: str, action: Callable[..., None], *args: object) -> None:
        try:
            action(*args)
        except (ValueError, KeyError, OSError, RuntimeError) as exc:  # RuntimeError: XfrmError
            self.counters["install_errors"] += 1
            log.error("child SA %s failed: %s", what, exc, extra={"fields": {"peer": peer}})

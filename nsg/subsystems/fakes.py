"""Fakes for table tests of the engine and of the daemon's wiring: a subsystem that records every
part it is set to (into a shared journal, so tests see the order across subsystems) and fails on
the parts it is told to."""

from __future__ import annotations

from typing import Any

from nsg.compose import EvpnView
from nsg.engine import Changes, SubsystemError


class FakeSubsystem:
    def __init__(self, name: str, journal: list[tuple[str, Any]] | None = None,
                 fail_on: frozenset | set | tuple = ()):
        self.name = name
        self.journal = journal if journal is not None else []
        self.fail_on = list(fail_on)  # parts whose set() raises (compared by ==: parts need not hash)
        self.current: Any = None  # what it holds now

    async def set(self, part: Any) -> Changes:
        self.journal.append((self.name, part))
        if any(part == bad for bad in self.fail_on):
            raise SubsystemError(self.name, f"{self.name}: refused {part!r}")
        changed = part != self.current
        self.current = part
        return Changes((f"{self.name} -> {part!r}",)) if changed else Changes()


class FakeDhcpClient:
    """nsg.uplinks.dhcp.DhcpClient's interface; ``lease()`` plays a lease arriving."""

    def __init__(self, uplink: str, interface: str, on_lease, on_error):
        self.uplink, self.interface = uplink, interface
        self.on_lease, self.on_error = on_lease, on_error
        self.running = False

    def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def lease(self, lease) -> None:
        self.on_lease(self.uplink, lease)


class FakeEvpn(FakeSubsystem):
    """The EVPN subsystem as the daemon uses it: set(part), and the RIB's view it composes from
    (``rib``: what a test makes the RIB want; the test then queues the "evpn" event the real RIB's
    callback would)."""

    def __init__(self, journal: list[tuple[str, Any]] | None = None):
        super().__init__("evpn", journal)
        self.rib = EvpnView()
        self.control = None  # no EvpnControl: `nsg status` shows no EVPN section
        self.kicks = 0

    def view(self) -> EvpnView:
        return self.rib

    def kick(self) -> None:
        self.kicks += 1

    async def stop(self) -> None:
        self.current = None

"""The daemon's own event loop, without root: Daemon.run() on the fake kernel, with fakes for the
parts that need nft, a TUN or docker, and a fake DHCP client. Typed events go in (a config file
reloaded, a lease, an EVPN RIB change, a resync tick, a bad config, a config the kernel refuses)
and what comes out is checked: compose + engine ran in the declared order, a repeat changes
nothing, a refused config leaves the running one as it was, and `nsg status` (over the control
socket) says so."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from nsg import tunnels
from nsg.compose import DESIRED_ORDER, EvpnView
from nsg.control_socket import request
from nsg.daemon import Daemon
from nsg.dataplane.types import AddAddr, AddFdb, Addr, DelFdb, Fdb
from nsg.engine import Event
from nsg.model import parse_config
from nsg.model.status import GatewayStatus
from nsg.policy.guard import guard_for
from nsg.status import render
from nsg.subsystems.fakes import FakeDhcpClient, FakeEvpn, FakeSubsystem
from nsg.uplinks.lease import Lease
from tests.unit.conftest import base_doc
from tests.unit.engine.test_adapters import Counting, kernel
from tests.unit.test_cli import cert_config

M = "02:00:00:00:00:07"
FAKED = ("guard", "policy", "esp_engine", "port_guard", "ike", "qos", "workloads")  # nft, the ESP engine, docker
LEASE = Lease(IPv4Interface("198.18.5.7/24"), IPv4Address("198.18.5.1"))
REMOTE_MAC = Fdb("vx-100", M, "198.19.255.2")


def gateway_doc(**changes) -> dict:
    doc = base_doc()
    doc["uplinks"] = [{"name": "wan0", "interface": "wan0", "mode": "dhcp"}]
    doc["evpn"] = {"asn": 65000, "peers": [{"address": "198.19.255.254", "asn": 65000}]}
    return doc | changes


class Box:
    """A daemon with its fakes, and the few ways a test talks to it."""

    def __init__(self, tmp_path: Path, doc: dict | None = None):
        self.config = tmp_path / "config.json"
        self.state = tmp_path / "state"
        self.journal: list[tuple[str, object]] = []  # (subsystem, part), across the fakes, in order
        self.fakes = {n: FakeSubsystem(n, self.journal) for n in FAKED}
        self.evpn = FakeEvpn(self.journal)
        self.kernel: Counting = kernel()
        self.dhcp: dict[str, FakeDhcpClient] = {}
        self.write(doc or gateway_doc())
        self.daemon = Daemon(self.config, self.state, lambda: self.kernel, resync_interval=3600,
                             subsystems={**self.fakes, "evpn": self.evpn}, dhcp_clients=self._dhcp_client)

    def _dhcp_client(self, uplink, interface, on_lease, on_error) -> FakeDhcpClient:
        self.dhcp[uplink] = FakeDhcpClient(uplink, interface, on_lease, on_error)
        return self.dhcp[uplink]

    def write(self, doc: dict | str) -> None:
        self.config.write_text(doc if isinstance(doc, str) else json.dumps(doc))

    def names(self, since: int = 0) -> list[str]:
        return [n for n, _ in self.journal[since:]]

    async def event(self, kind: str, done: Callable[[], bool]) -> None:
        """Queue a typed event, as a signal, a callback or the timer would, and wait for the loop."""
        self.daemon._request(Event(kind))
        await until(f"the daemon acted on {kind!r}", done)

    async def status(self) -> dict:
        return await asyncio.to_thread(request, self.state, "status")


async def until(what: str, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.01)


def test_the_main_loop_composes_and_sets_in_order_and_keeps_the_running_config(tmp_path):
    box = Box(tmp_path)
    d = box.daemon
    applies = lambda n: lambda: d.counters["applies"] == n  # noqa: E731

    async def go() -> None:
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await until("the first apply", applies(1))
            # start: every part set once, in the declared order (the fakes' journal, and the engine's record)
            assert d.last_apply is not None and d.last_apply.reason == "start" and d.last_apply.error is None
            assert tuple(d.last_apply.subsystems) == DESIRED_ORDER
            assert box.names() == ["guard", "policy", "esp_engine", "port_guard", "ike", "qos", "evpn", "workloads"]
            assert box.dhcp["wan0"].running and d.generation == 1
            assert box.journal[-2][1].local_ip == "0.0.0.0"  # the evpn part: no lease yet

            # a lease: the address reaches the kernel and, as the local IP, EVPN; nothing else changes
            seen = len(box.journal)
            box.dhcp["wan0"].lease(LEASE)
            await until("the lease applied", applies(2))
            assert d.last_apply.reason == "lease" and box.names(seen) == ["evpn"]
            assert box.journal[-1][1].local_ip == "198.18.5.7"
            assert AddAddr(Addr("wan0", "198.18.5.7/24")) in box.kernel.applied

            # an EVPN RIB change: only the dataplane, on its incremental path (no kernel read)
            seen, snapshots = len(box.journal), box.kernel.snapshots
            box.evpn.rib = EvpnView(fdb=frozenset({REMOTE_MAC}))
            await box.event("evpn", applies(3))
            assert d.last_apply.subsystems == {"dataplane": 1} and box.names(seen) == []
            assert box.kernel.applied[-1] == AddFdb(REMOTE_MAC) and box.kernel.snapshots == snapshots

            # the same config again (SIGHUP): "no changes", every part skipped
            ops = len(box.kernel.applied)
            await box.event("reload", applies(4))
            assert d.counters["reloads"] == 1 and d.generation == 1
            assert d.last_apply.skipped == list(DESIRED_ORDER) and d.last_apply.changes_made == 0
            assert box.names(seen) == [] and len(box.kernel.applied) == ops

            # the resync tick: the parts that read the kernel back are set again and repair drift
            box.kernel.apply(DelFdb(REMOTE_MAC))  # someone removed our entry behind our back
            await box.event("resync", applies(5))
            assert box.names(seen) == ["guard", "policy", "port_guard", "qos"]  # forced; the fakes find no change
            assert box.kernel.applied[-1] == AddFdb(REMOTE_MAC)
            assert d.counters["resyncs"] == 1 and d.counters["drift_repairs"] == 1

            # a new config: generation 2; what it changes is set, the rest skipped
            seen = len(box.journal)
            two = gateway_doc()
            two["subnets"] = [*two["subnets"], {"name": "lab", "vni": 200, "cidr": "198.19.1.0/24",
                                                "gateway": "198.19.1.1", "ports": []}]
            box.write(two)
            await box.event("reload", applies(6))
            assert d.generation == 2 and d.last_apply.error is None and box.names(seen) == ["port_guard", "evpn"]
            assert "guard" in d.last_apply.skipped and d.last_apply.subsystems["dataplane"] > 0
            assert (box.state / "last-good-config.json").exists()

            # a bad file: refused with the field named; nothing is set, the running config stays
            ops = len(box.kernel.applied)
            box.write({**two, "subnets": [{"name": "x", "vni": "not a number"}]})
            await box.event("reload", lambda: d.counters["reloads_rejected"] == 1)
            assert d.generation == 2 and d.counters["applies"] == 6 and len(box.kernel.applied) == ops
            assert "subnets" in (d.last_reload_error or "")

            # a config the kernel refuses (here the guard): the engine puts back what it changed
            three = {**two, "peers": [*two["peers"], {"name": "b3", "system_ip": "198.19.255.3",
                                                      "endpoint": "198.18.3.2"}]}
            box.fakes["guard"].fail_on.append(guard_for(parse_config(three)))
            running_guard = box.fakes["guard"].current
            seen = len(box.journal)
            box.write(three)
            await box.event("reload", lambda: d.counters["reloads_rejected"] == 2)
            assert box.names(seen) == ["guard", "guard"] and box.fakes["guard"].current == running_guard
            assert d.generation == 2 and d.config == parse_config(two)
            assert d.last_apply.failed == "guard" and d.last_apply.rolled_back_subsystems == ["guard"]

            # `nsg status`, over the socket: the document, typed, says all of it
            doc = await box.status()
            st = GatewayStatus.model_validate(doc)
            assert st.model_dump(mode="json") == doc  # the models carry every key, nothing more
            assert st.config is not None and st.config.generation == 2
            assert st.uplinks[0].address == "198.18.5.7/24" and st.uplinks[0].gateway == "198.18.5.1"
            assert [s.bridge for s in st.subnets] == ["br-100", "br-200"]
            assert f"vx-100 {M} dst 198.19.255.2" in st.fdb
            assert st.last_reload_error is not None and st.last_reload_error.startswith("could not apply")
            assert st.counters["reloads_rejected"] == 2 and st.tunnels is None and st.evpn is None
            first = render(doc).splitlines()[0]
            assert first.startswith("DEGRADED: ") and "config refused: could not apply" in first, first
        finally:
            d.stop()
            assert await asyncio.wait_for(task, 10) == 0
        assert not box.dhcp["wan0"].running and not (box.state / "nsg.sock").exists()

    asyncio.run(go())


def test_a_box_without_a_config_answers_the_short_document(tmp_path):
    """Waiting for the controller: the status has only the keys it always had for that case."""
    box = Box(tmp_path)
    d = Daemon(None, box.state, lambda: box.kernel, controller_url="wss://198.18.0.2:8443/channel",
               subsystems={**box.fakes, "evpn": box.evpn})
    d._start_channel = lambda: None  # type: ignore[method-assign]  # no controller in a unit test

    async def go() -> dict:
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await until("the control socket", (box.state / "nsg.sock").exists)
            return await box.status()
        finally:
            d.stop()
            assert await asyncio.wait_for(task, 10) == 0

    doc = asyncio.run(go())
    assert list(doc) == ["version", "pid", "config", "last_apply", "channel", "counters", "last_reload_error",
                         "bootstrap", "upgrade"]
    assert doc["upgrade"]["appliance"] is False  # a Daemon given no upgrade box: upgrades are off
    assert doc["config"] is None and box.journal == []
    assert render(doc).splitlines()[0] == "DEGRADED: no config yet"


def test_credentials_are_loaded_once_per_config_and_again_after_a_renewal(tmp_path, monkeypatch):
    """nsg/preflight.py loads the IPsec credentials when the daemon takes a config; IKE gets them through
    the desired state and never reads them itself. The same config again keeps them; an LDevID renewal
    (the "renewed" event) loads them again and hands them to IKE; a renewal whose files do not load
    leaves IKE with what it has and says why."""
    loads: list[tunnels.Credentials] = []
    real = tunnels.load_credentials

    def counting(*a, **kw):
        loads.append(real(*a, **kw))
        return loads[-1]

    monkeypatch.setattr(tunnels, "load_credentials", counting)
    doc = json.loads(cert_config(tmp_path, 0o600).read_text())  # transport esp, certificate auth
    box = Box(tmp_path, doc)
    d = box.daemon
    d._kernel_esp = False  # probed already: the userspace engine (its fake)
    ike = lambda: [part for n, part in box.journal if n == "ike"]  # noqa: E731
    applies = lambda n: lambda: d.counters["applies"] == n  # noqa: E731

    async def go() -> None:
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await until("the first apply", applies(1))
            assert len(loads) == 1 and ike()[-1].credentials is loads[0] and loads[0].key is not None

            await box.event("reload", applies(2))  # the same config: the same credentials, not read again
            assert len(loads) == 1 and len(ike()) == 1

            await box.event("renewed", applies(3))  # a renewed LDevID: read again, and IKE gets them
            assert len(loads) == 2 and loads[1].epoch == 1 and d.credentials is loads[1]
            assert len(ike()) == 2 and ike()[-1].credentials is loads[1]

            two = {**doc, "subnets": [{**doc["subnets"][0], "ports": []}]}  # another config, same ipsec
            box.write(two)
            await box.event("reload", applies(4))
            assert len(loads) == 3 and d.credentials is loads[2] and d.generation == 2
            assert len(ike()) == 2  # nothing IKE uses changed: not set again

            os.chmod(tmp_path / "key.pem", 0o644)  # the renewal's files cannot be used
            await box.event("renewed", applies(5))
            assert len(loads) == 3 and d.credentials is loads[2] and len(ike()) == 2
            assert d.last_apply is not None and d.last_apply.failed == "ike"
            assert "readable by others" in (d.last_apply.error or "")
        finally:
            d.stop()
            assert await asyncio.wait_for(task, 10) == 0

    asyncio.run(go())


def test_the_config_s_upgrade_reaches_the_agent_its_report_the_status_and_the_channel(tmp_path):
    """The upgrade part is the last one set; the agent looks at the box in a thread (here a file box
    without release info: a development tree) and its report is in `nsg status` and in what the channel
    sends after each hello (an event of kind "upgrade" the controller validates)."""
    from nsg.channel import wire
    from nsg.model.upgrade import UpgradeState
    from nsg.upgrade.install import file_box

    sha = "ab" * 32
    doc = gateway_doc(upgrade={"version": "1.3.0", "bundles": [
        {"model": "nsg-atom-x86_64", "url": f"https://198.18.0.2:8444/bundles/{sha}", "sha256": sha, "size": 10}]})
    box = Box(tmp_path, doc)
    (tmp_path / "slots").mkdir()
    d = Daemon(box.config, box.state, lambda: box.kernel, resync_interval=3600,
               subsystems={**box.fakes, "evpn": box.evpn}, dhcp_clients=box._dhcp_client,
               upgrade_box=file_box(tmp_path / "slots", box.state), reboot=lambda: pytest.fail("no reboot here"))

    async def go() -> dict:
        task = asyncio.get_running_loop().create_task(d.run())
        try:
            await until("the first apply", lambda: d.counters["applies"] == 1)
            assert d.last_apply.subsystems["upgrade"] == 1  # "upgrade target 1.3.0"
            await until("the agent looked", lambda: d.upgrades.status().agent.action == "not-appliance", 10)
            return await box.status()
        finally:
            d.stop()
            assert await asyncio.wait_for(task, 10) == 0

    status = asyncio.run(go())
    agent = status["upgrade"]["agent"]
    assert (agent["action"], agent["target"]) == ("not-appliance", "1.3.0") and agent["since"] > 1e9
    assert "release.json is missing" in status["upgrade"]["detail"]
    assert "upgrade: not an A/B appliance: " in render(status)
    event = d._channel_greeting()[-1]
    assert isinstance(event, wire.Event) and event.kind == "upgrade"
    assert UpgradeState.model_validate(event.detail) == d.upgrades.status()


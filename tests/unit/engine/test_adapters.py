"""The subsystem adapters with fakes under them: the dataplane's incremental vs full pass, DHCP
clients following the part, the tunnels' engine/IKE split, the engine over real adapters."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from nsg.compose import DhcpPart, EspEnginePart, EvpnView, IkePart, compose
from nsg.dataplane.fake import FakeKernel
from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import Fdb, LinkState, Snapshot
from nsg.engine import Engine
from nsg.model import parse_config
from nsg.subsystems import DataplaneSubsystem, DhcpSubsystem, EspEngineSubsystem, IkeSubsystem, TunnelSlot
from nsg.subsystems.fakes import FakeDhcpClient
from nsg.tunnels import Credentials
from tests.unit.conftest import base_doc

M = "02:00:00:00:00:07"


class Counting(FakeKernel):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.snapshots = 0

    def snapshot(self) -> Snapshot:
        self.snapshots += 1
        return super().snapshot()


def kernel() -> Counting:
    links = {"lo": LinkState("lo", 1, None, 65536, True)}
    for i, name in enumerate(("wan0", "lan0"), start=2):
        links[name] = LinkState(name, i, "veth", 1500, True)
    return Counting(Snapshot(links=links))


def evpn_cfg():
    doc = base_doc()
    doc["evpn"] = {"asn": 65000, "peers": [{"address": "198.19.255.254", "asn": 65000}]}
    return parse_config(doc)


def test_dataplane_entries_only_go_incremental_the_same_state_again_goes_full():
    k = kernel()
    dp = DataplaneSubsystem(Reconciler(k))
    c = evpn_cfg()
    first = compose(c, evpn_view=EvpnView()).dataplane
    assert asyncio.run(dp.set(first)).ops and k.snapshots == 1  # nothing set before: a full pass
    mac = compose(c, evpn_view=EvpnView(fdb=frozenset({Fdb("vx-100", M, "198.19.255.9")}))).dataplane
    changes = asyncio.run(dp.set(mac))
    assert changes.ops and k.snapshots == 1 and not dp.last_full  # entries only: no snapshot
    assert asyncio.run(dp.set(mac)).ops == () and k.snapshots == 2 and dp.last_full  # forced repeat: full


def test_dataplane_link_changes_go_full():
    k = kernel()
    dp = DataplaneSubsystem(Reconciler(k))
    a = compose(evpn_cfg()).dataplane
    asyncio.run(dp.set(a))
    b = replace(a, mtus={"lo": 1400})
    asyncio.run(dp.set(b))
    assert k.snapshots == 2


def test_dhcp_clients_follow_the_part():
    leases: list[str] = []
    made: dict[str, FakeDhcpClient] = {}

    def factory(name, ifname, on_lease, on_error):
        made[name] = FakeDhcpClient(name, ifname, on_lease, on_error)
        return made[name]

    async def go():
        dh = DhcpSubsystem(None, leases.append, lambda *_: None, client_factory=factory)  # type: ignore[arg-type]
        assert (await dh.set(DhcpPart((("wan0", "eth0"),)))).ops == ("start dhcp wan0 eth0",)
        made["wan0"].lease("L1")
        made["wan0"].lease("L1")  # the same lease again: no event
        assert dh.leases == {"wan0": "L1"} and leases == ["wan0"]
        assert dh.leases_for({"wan0": "eth0"}) == {"wan0": "L1"} and dh.leases_for({"wan0": "eth1"}) == {}
        old = made["wan0"]
        changes = await dh.set(DhcpPart((("wan0", "eth1"),)))  # another interface: a new client
        await asyncio.sleep(0)
        assert changes.ops == ("stop dhcp wan0 eth0", "start dhcp wan0 eth1") and not old.running
        assert dh.leases == {}
        await dh.set(DhcpPart())
        await asyncio.sleep(0)
        assert dh.clients == {} and not made["wan0"].running

    asyncio.run(go())


class FakeTunnels:
    def __init__(self):
        self.manager = None
        self.backend = "?"
        self.calls: list[str] = []
        self.creds: list = []  # the credentials each start/apply was given

    def start_engine(self, ip, kernel_esp):
        self.backend = "xfrm" if kernel_esp else "userspace"
        self.calls.append("engine")

    async def start_ike(self, cfg, local_ip, creds):
        self.manager = object()
        self.calls.append(f"ike {local_ip}")
        self.creds.append(creds)

    def apply(self, cfg, local_ip, creds):
        self.calls.append(f"apply {local_ip}")
        self.creds.append(creds)

    async def stop(self):
        self.calls.append("stop")


def test_tunnels_engine_before_ike_and_ike_follows_the_local_ip():
    cfg = parse_config(base_doc())
    slot = TunnelSlot(factory=FakeTunnels)  # type: ignore[arg-type]
    esp, ike = EspEngineSubsystem(slot), IkeSubsystem(slot)
    eng = Engine([esp, ike])
    loaded, renewed = Credentials(), Credentials(epoch=1)

    class S:
        def __init__(self, on, local="0.0.0.0", creds=loaded):
            self.esp_engine = EspEnginePart(on, "ipsec section", False)  # type: ignore[arg-type]
            self.ike = IkePart(on, local, ("x",), creds.epoch, cfg, creds) if on else IkePart()

    async def go():
        r = await eng.set(S(True, "198.18.1.2"))
        t = slot.tunnels
        assert r.ok and t.calls == ["engine", "ike 198.18.1.2"] and t.backend == "userspace"
        await eng.set(S(True, "198.18.1.2", Credentials()))  # the same config loaded again: no changes
        assert t.calls == ["engine", "ike 198.18.1.2"] and t.creds == [loaded]
        await eng.set(S(True, "198.18.5.7"))
        assert t.calls[-1] == "apply 198.18.5.7" and t.creds[-1] is loaded  # what it is given, not read again
        await eng.set(S(True, "198.18.5.7", renewed))  # an LDevID renewal reaches IKE
        assert t.calls[-1] == "apply 198.18.5.7" and t.creds[-1] is renewed
        await eng.set(S(False))
        assert t.calls[-1] == "stop" and slot.tunnels is None

    asyncio.run(go())


def test_ike_without_loaded_credentials_is_refused():
    cfg = parse_config(base_doc())
    slot = TunnelSlot(factory=FakeTunnels)  # type: ignore[arg-type]
    eng = Engine([EspEngineSubsystem(slot), IkeSubsystem(slot)])

    class S:
        esp_engine = EspEnginePart(True, "ipsec section", False)  # type: ignore[arg-type]
        ike = IkePart(True, "198.18.1.2", ("x",), 0, cfg, None)

    r = asyncio.run(eng.set(S()))
    assert r.error is not None and r.error.subsystem == "ike" and "no credentials" in r.error.message
    assert slot.tunnels is not None and slot.tunnels.calls == ["engine"]  # IKE never started


def test_the_daemon_wires_the_subsystems_in_the_declared_order():
    from pathlib import Path

    from nsg.compose import DESIRED_ORDER
    from nsg.daemon import Daemon

    d = Daemon(None, Path("/nonexistent"), kernel)
    d.reconciler = Reconciler(kernel())
    assert tuple(s.name for s in d._engine().order) == DESIRED_ORDER

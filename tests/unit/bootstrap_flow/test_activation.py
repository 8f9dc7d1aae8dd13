"""Activation codes: no LDevID without the code, wrong codes rate limited, `nsg activate` stores it."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys

import pytest

from bootstrap.driver import Bootstrapper, Server
from bootstrap.errors import LocalBootstrapError
from bootstrap.identity import FileIdentityStore
from controller.activation import ActivationGate
from controller.est_server import AuthContext, Grant, Pending
from controller.store import Store
from tests.unit.bootstrap_flow.test_flow import serve, world  # noqa: F401 - the fixture

UPLINK = [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
           "gateway": "198.18.1.1"}]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ctl.db")
    s.enterprises.create("acme")
    s.gateways.add("acme", "b1", serial="NSG-9", uplinks=UPLINK, ports={}, behind_nat=False,
                  activation_code="open-sesame-42")
    s.gateways.add("acme", "b2", serial="NSG-10", uplinks=[{**UPLINK[0], "address": "198.18.2.2/24",
                                                            "gateway": "198.18.2.1"}], ports={}, behind_nat=False)
    yield s
    s.close()


def ctx(serial, code=None, op="simpleenroll"):
    return AuthContext(operation=op, peer_cert=None, basic=(serial, code) if code else None)


def test_gate(store):
    t = [0.0]
    gate = ActivationGate(store, max_failures=3, window_s=100, clock=lambda: t[0])
    assert isinstance(gate.lookup("NSG-9", ctx("NSG-9")), Pending)  # activation required
    assert isinstance(gate.lookup("NSG-10", ctx("NSG-10")), Grant)  # no code configured
    assert gate.lookup("NSG-404", ctx("NSG-404")) is None
    for _ in range(3):
        assert isinstance(gate.lookup("NSG-9", ctx("NSG-9", "guess")), Pending)
    # locked: even the right code waits out the window
    assert isinstance(gate.lookup("NSG-9", ctx("NSG-9", "open-sesame-42")), Pending)
    assert gate.counters["locked"] == 1
    t[0] = 150.0
    g = gate.lookup("NSG-9", ctx("NSG-9", "open-sesame-42"))
    assert isinstance(g, Grant) and str(g.san_ip) == str(store.gateways.get("b1").system_ip)
    # a code for another serial does not count
    assert isinstance(ActivationGate(store).lookup("NSG-9", ctx("NSG-10", "open-sesame-42")), Pending)


def test_enrollment_waits_for_the_code(world, store, tmp_path):  # noqa: F811
    gate = ActivationGate(store)

    async def main():
        runner, port, _ = await serve(world, est_lookup=gate.lookup)
        try:
            ident = FileIdentityStore(world["ident"])
            boot = Bootstrapper(ident, est_max_pending=0)
            with pytest.raises(LocalBootstrapError, match="activation required"):
                await boot.run([Server(f"https://127.0.0.1:{port}")])
            assert ident.ldevid() is None
            # the operator types the code on the box (or in its console)
            state = world["ident"].parent
            r = subprocess.run([sys.executable, "-m", "nsg.cli", "activate", "open-sesame-42", "--state-dir",
                                str(state)], capture_output=True, text=True, check=False)
            assert r.returncode == 0, r.stderr
            assert stat.S_IMODE((world["ident"] / "activation-code").stat().st_mode) == 0o600
            await boot.run([Server(f"https://127.0.0.1:{port}")])
            assert ident.ldevid() is not None
        finally:
            await runner.cleanup()
        assert gate.counters["waiting"] == 1 and gate.counters["granted"] == 1

    asyncio.run(main())


def test_activate_cli_refuses_junk(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nsg.cli", "activate", "x" * 200, "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "1-128 printable" in r.stderr
    r = subprocess.run([sys.executable, "-m", "nsg.cli", "activate", "abc", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "no factory identity" in r.stderr


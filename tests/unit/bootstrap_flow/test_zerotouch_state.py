"""`nsg status` shows "activation-required" because the bootstrap said so with its error's type, not
because some text -- possibly a server's -- contained the words."""

from __future__ import annotations

import asyncio

import pytest

import nsg.zerotouch as zt
from bootstrap import errors
from bootstrap.errors import Reason, RemoteBootstrapError
from bootstrap.identity import factory_init, make_manufacturer_ca
from bootstrap.sources.model import BootstrapServer
from nsg.dataplane.types import SetUp


class _Stop(Exception):
    pass


def attempt(tmp_path, monkeypatch, failure: Exception) -> zt.ZeroTouch:
    """One bootstrap attempt that fails with ``failure``; returns the ZeroTouch to inspect."""
    factory_init(tmp_path / "identity", "NSG-7", make_manufacturer_ca(tmp_path / "mfg"))

    class Boot:
        def __init__(self, *_a, **_kw):
            pass

        def done(self):
            return None

        async def run(self, servers):
            raise failure

    async def found(*_a, **_kw):
        return [BootstrapServer("https://198.51.100.1", "dhcp")]

    async def stop(_seconds):
        raise _Stop

    monkeypatch.setattr(zt, "Bootstrapper", Boot)
    monkeypatch.setattr(zt, "discover", found)
    monkeypatch.setattr(zt.asyncio, "sleep", stop)
    z = zt.ZeroTouch(tmp_path, "wan0", lambda op: None)
    with pytest.raises(_Stop):
        asyncio.run(z.run())
    return z


def test_activation_required_is_a_type(tmp_path, monkeypatch):
    z = attempt(tmp_path, monkeypatch, errors.ActivationRequired("enrollment held until the code is given"))
    assert z.state == "activation-required"


def test_a_servers_words_do_not_make_it_activation_required(tmp_path, monkeypatch):
    junk = RemoteBootstrapError("https://198.51.100.1: HTTP 500: b'activation required, says me'",
                                reason=Reason.TRANSPORT)
    z = attempt(tmp_path, monkeypatch, junk)
    assert z.state == "retrying" and "activation required" in z.last_error


def test_the_wan_port_is_brought_up_before_discovery(tmp_path, monkeypatch):
    """A box's ports come up administratively down (the image's first boot found this: udhcpc said only
    "Network is down" for ever). Each attempt sets the WAN link up before any source runs."""
    factory_init(tmp_path / "identity", "NSG-8", make_manufacturer_ca(tmp_path / "mfg"))
    seen: list[str] = []

    async def found(*_a, **_kw):
        seen.append("discover")
        return []

    async def stop(_seconds):
        raise _Stop

    monkeypatch.setattr(zt, "discover", found)
    monkeypatch.setattr(zt.asyncio, "sleep", stop)
    z = zt.ZeroTouch(tmp_path, "eno1", lambda op: seen.append(repr(op)))
    with pytest.raises(_Stop):
        asyncio.run(z.run())
    assert seen == [repr(SetUp("eno1")), "discover"]
    assert z.state == "retrying" and z.last_error == "no bootstrap server found"


def test_a_dhcp_timeout_says_so(monkeypatch):
    """TimeoutError is an OSError: it must not be reported as "cannot start udhcpc: " with no reason."""
    from bootstrap.sources import dhcp
    from bootstrap.sources.model import LocalDiscoveryError

    class SlowUdhcpc:
        def __init__(self, *_a, **_kw):
            pass

        async def run(self, timeout):
            raise TimeoutError

    monkeypatch.setattr(dhcp, "Udhcpc", SlowUdhcpc)
    src = dhcp.DhcpSource("eno1", busybox="/bin/busybox", timeout=3)
    with pytest.raises(LocalDiscoveryError, match=r"udhcpc on eno1 did not finish in 3 s"):
        asyncio.run(src.run())


def test_the_bootstrap_lease_writes_the_boxs_resolv_conf(tmp_path):
    """While the box zero-touches, its bootstrap and controller URLs may name hosts: the bootstrap lease's
    name servers (validated like any lease's) go into resolv.conf at once, when nsg was told where."""
    from bootstrap.sources.dhcp import DhcpResult

    ops: list = []
    path = tmp_path / "resolv.conf"
    z = zt.ZeroTouch(tmp_path, "eno1", ops.append, resolv_conf=path)
    lease = DhcpResult("eno1", address="198.18.1.2", prefixlen=24, routers=("198.18.1.1",),
                       nameservers=("198.18.1.1", "127.0.0.1", "192.0.2.53"), domain="branch.example")
    asyncio.run(z._apply_lease(lease))
    assert path.read_text().splitlines()[1:] == ["search branch.example", "nameserver 198.18.1.1",
                                                 "nameserver 192.0.2.53"]
    nowhere = zt.ZeroTouch(tmp_path / "other", "eno1", ops.append)
    asyncio.run(nowhere._apply_lease(lease))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["resolv.conf"]

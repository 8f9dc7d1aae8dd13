"""nsg.policy.apply.BridgeNetfilter: bridge-nf-call-iptables on while any user needs it, the value
found before put back when the last lets go; one object per Enforcement, shared by firewall and QoS.
The sysctl is a plain file here."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from nsg.policy import qos_apply
from nsg.policy.apply import BridgeNetfilter, NftPolicy, PolicyApplyError
from nsg.policy.enforce import Enforcement
from nsg.policy.qos_apply import TcQos
from nsg.policy.tc import LinkPlan, QosPlan

IFB = LinkPlan(dev="ifbtest0", rate_kbit=1000, classes=(), default_minor=0x17, ingress_of="eth9")


@pytest.fixture
def sysctl(tmp_path):
    p = tmp_path / "bridge-nf-call-iptables"
    p.write_text("0\n")
    return p


def test_on_while_any_user_needs_it_and_the_old_value_back_after_the_last(sysctl):
    bnf = BridgeNetfilter(sysctl)
    firewall, qos = object(), object()
    bnf.set(firewall, True)
    assert sysctl.read_text() == "1" and bnf.users == 1
    bnf.set(qos, True)
    bnf.set(firewall, True)  # again: still one user each
    assert bnf.users == 2
    bnf.set(firewall, False)
    assert sysctl.read_text() == "1"  # qos still needs it
    bnf.set(firewall, False)  # a user that let go already: nothing happens
    assert sysctl.read_text() == "1" and bnf.users == 1
    bnf.set(qos, False)
    assert sysctl.read_text() == "0" and bnf.users == 0


def test_the_value_found_before_is_what_comes_back(sysctl):
    sysctl.write_text("1\n")
    bnf = BridgeNetfilter(sysctl)
    u = object()
    bnf.set(u, True)
    bnf.set(u, False)
    assert sysctl.read_text() == "1"
    sysctl.write_text("0\n")  # changed by someone else meanwhile: read again at the next first user
    bnf.set(u, True)
    assert sysctl.read_text() == "1"
    bnf.set(u, False)
    assert sysctl.read_text() == "0"


def test_a_user_that_never_asked_changes_nothing(sysctl):
    bnf = BridgeNetfilter(sysctl)
    bnf.set(object(), False)
    assert sysctl.read_text() == "0\n" and bnf.users == 0


def test_two_objects_do_not_share_users(sysctl):
    """No process-wide state: what one object counts is its own."""
    a, b = BridgeNetfilter(sysctl), BridgeNetfilter(sysctl)
    u = object()
    a.set(u, True)
    assert (a.users, b.users) == (1, 0)
    b.set(u, False)  # not b's user
    assert sysctl.read_text() == "1"
    a.set(u, False)
    assert sysctl.read_text() == "0"


def test_no_sysctl_is_a_policy_apply_error(tmp_path):
    bnf = BridgeNetfilter(tmp_path / "absent")
    with pytest.raises(PolicyApplyError, match="br_netfilter"):
        bnf.set(object(), True)
    assert bnf.users == 0


def test_enforcement_gives_its_firewall_and_qos_one_object(monkeypatch, sysctl):
    enf = Enforcement()
    enf.bridge_nf.path = sysctl
    monkeypatch.setattr(qos_apply, "_run", lambda argv, check=True: "")
    monkeypatch.setattr(qos_apply, "nft_text", lambda doc, *a: "")
    monkeypatch.setattr(qos_apply, "nft_json", lambda doc, *a: "")
    # the firewall's kernel side is not under test: it only takes the bridge hooks, as apply_config does
    monkeypatch.setattr(NftPolicy, "apply_config", lambda self, c, u, verify=False: self._bridge_netfilter(True) or 1)
    monkeypatch.setattr(NftPolicy, "remove", lambda self: self._bridge_netfilter(False) or True)
    asyncio.run(enf.set_policy(SimpleNamespace(policy=object()), {}))
    asyncio.run(enf.set_qos(QosPlan((), "", True)))  # limiters: need it too
    assert sysctl.read_text() == "1" and enf.bridge_nf.users == 2
    asyncio.run(enf.set_policy(None, {}))
    assert sysctl.read_text() == "1"  # the limiters still police bridged traffic
    asyncio.run(enf.set_qos(None))
    assert sysctl.read_text() == "0" and enf.bridge_nf.users == 0
    assert Enforcement().bridge_nf is not enf.bridge_nf


def test_the_ifb_is_made_and_deleted_through_the_netlink_adapter(monkeypatch):
    """No `ip` subprocess: ifb devices go through nsg.dataplane.netlink; tc stays on its command line."""
    calls: list[tuple] = []
    monkeypatch.setattr(qos_apply, "_run", lambda argv, check=True: calls.append(("run", argv[0])) or "")
    monkeypatch.setattr(qos_apply.netlink, "ifb_up", lambda dev: calls.append(("ifb_up", dev)))
    monkeypatch.setattr(qos_apply.netlink, "ifb_delete", lambda dev: calls.append(("ifb_delete", dev)) or True)
    monkeypatch.setattr(qos_apply, "nft_json", lambda doc, *a: "")
    link = IFB
    qos = TcQos(BridgeNetfilter())
    qos._build(link)
    assert calls[0] == ("ifb_up", "ifbtest0")
    assert {c[1] for c in calls if c[0] == "run"} == {qos_apply.TC}
    qos._plan = QosPlan((link,), "", False)
    calls.clear()
    qos.remove()
    assert ("ifb_delete", "ifbtest0") in calls
    assert {c[1] for c in calls if c[0] == "run"} == {qos_apply.TC}


def test_an_ifb_the_kernel_refuses_is_a_policy_apply_error(monkeypatch):
    from nsg.dataplane.errors import DataplaneError

    def refuse(dev):
        raise DataplaneError(f"ifb {dev} up", "operation not supported", 95)

    monkeypatch.setattr(qos_apply.netlink, "ifb_up", refuse)
    monkeypatch.setattr(qos_apply, "_run", lambda argv, check=True: "")
    with pytest.raises(PolicyApplyError, match="not supported"):
        TcQos(BridgeNetfilter())._build(IFB)

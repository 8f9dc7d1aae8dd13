"""The app reconciler by table: desired apps x owned containers -> operations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from containers.reconcile import Attach, Create, Remove, Start, plan, wanted_attachment
from containers.spec import AppSpec, Running

WEB = AppSpec("web", "acme/web:1", "br-100", "198.19.0.50/24", "198.19.0.1", 1388, command=("httpd", "-f"))


def running(spec: AppSpec, **kw) -> Running:
    base = Running(spec.name, "c0ffee" * 4, spec.digest(), "running", 4242, attachment=wanted_attachment(spec))
    return replace(base, **kw)


@pytest.mark.parametrize(("desired", "actual", "expected"), [
    pytest.param({"web": WEB}, {}, [Create(WEB), Start(WEB), Attach(WEB)], id="new app"),
    pytest.param({"web": WEB}, {"web": running(WEB)}, [], id="as wanted: nothing"),
    pytest.param({}, {"web": running(WEB)}, [Remove("web", "c0ffee" * 4)], id="app removed"),
    pytest.param({"web": replace(WEB, image="acme/web:2")}, {"web": running(WEB)},
                 [Remove("web", "c0ffee" * 4), Create(replace(WEB, image="acme/web:2")),
                  Start(replace(WEB, image="acme/web:2")), Attach(replace(WEB, image="acme/web:2"))],
                 id="new image: replaced"),
    pytest.param({"web": replace(WEB, address="198.19.0.51/24")}, {"web": running(WEB)},
                 [Attach(replace(WEB, address="198.19.0.51/24"))], id="new address: re-attached, same container"),
    pytest.param({"web": WEB}, {"web": running(WEB, state="exited", pid=0, attachment=None)},
                 [Start(WEB), Attach(WEB)], id="killed outside nsg: started and attached"),
    pytest.param({"web": WEB}, {"web": running(WEB, attachment=None)}, [Attach(WEB)],
                 id="restarted by docker: a new netns, attached"),
    pytest.param({"web": WEB}, {"web": running(WEB, state="restarting", pid=0, attachment=None)}, [],
                 id="docker is restarting it: wait"),
])
def test_plan(desired, actual, expected):
    assert plan(desired, actual) == expected


def test_digest_ignores_network_and_sees_the_rest():
    assert WEB.digest() == replace(WEB, address="198.19.0.9/24", mtu=1400, bridge="br-200").digest()
    assert WEB.digest() != replace(WEB, memory_mb=64).digest() != replace(WEB, env=(("A", "1"),)).digest()
    assert len(WEB.host_ifname) <= 15 and WEB.host_ifname != replace(WEB, name="db").host_ifname
    assert WEB.mac == replace(WEB, mtu=1400).mac != replace(WEB, address="198.19.0.51/24").mac
    assert int(WEB.mac[:2], 16) & 0b11 == 0b10  # locally administered unicast

"""The box's resolv.conf (nsg/resolver.py, nsg/subsystems/resolver.py): what a DHCP lease may put in it
(options 6 and 15, validated: nothing else, no extra lines), the order across uplinks, the atomic
write that happens only on a change, and the engine part composed from the config's DHCP uplinks."""

from __future__ import annotations

import asyncio
import os
import stat
from ipaddress import IPv4Address, IPv4Interface

import pytest

from nsg import resolver
from nsg.compose import ResolverPart, compose
from nsg.engine import SubsystemError
from nsg.model import parse_config
from nsg.subsystems.resolver import ResolverSubsystem
from nsg.uplinks.lease import Lease, lease_from_env
from tests.unit.conftest import base_doc


def lease(**env):
    return lease_from_env({"ip": "198.18.1.2", "mask": "24", **env})


def test_option_6_keeps_unicast_ipv4_in_order_and_at_most_three():
    got = lease(dns="198.18.1.1 not-an-address 127.0.0.1 224.0.0.251 0.0.0.0 255.255.255.255 198.18.1.1 "
                    "192.0.2.53 192.0.2.54 192.0.2.55").dns
    assert got == (IPv4Address("198.18.1.1"), IPv4Address("192.0.2.53"), IPv4Address("192.0.2.54"))


@pytest.mark.parametrize("domain, expected", [
    ("Branch.Example.", "branch.example"),
    ("example.net", "example.net"),
    ("a b", None),  # two names: not a domain
    ("evil\nnameserver 203.0.113.66", None),  # a line of its own in resolv.conf
    ("x" * 64 + ".example", None),  # label over 63
    ("-bad.example", None),
    ("1.2.3", None),  # all-numeric top label
    ("", None),
])
def test_option_15_is_one_host_name_or_nothing(domain, expected):
    assert lease(domain=domain).domain == expected


def test_a_bad_option_6_or_15_leaves_the_lease_usable():
    got = lease(dns="bogus", domain="a;b", router="198.18.1.1")
    assert got.address == IPv4Interface("198.18.1.2/24") and got.gateway == IPv4Address("198.18.1.1")
    assert (got.dns, got.domain) == ((), None)


def test_uplinks_in_order_first_servers_first_no_repeats():
    a = Lease(IPv4Interface("198.18.1.2/24"), dns=(IPv4Address("198.18.1.1"), IPv4Address("192.0.2.53")),
              domain="one.example")
    b = Lease(IPv4Interface("198.18.2.2/24"), dns=(IPv4Address("192.0.2.53"), IPv4Address("198.18.2.1"),
                                                   IPv4Address("198.18.2.3")), domain="two.example")
    r = resolver.gather([(a.dns, a.domain), (b.dns, b.domain)])
    assert r == resolver.Resolver(("198.18.1.1", "192.0.2.53", "198.18.2.1"), ("one.example", "two.example"))
    text = resolver.render(r)
    assert text.splitlines()[1:] == ["search one.example two.example", "nameserver 198.18.1.1",
                                     "nameserver 192.0.2.53", "nameserver 198.18.2.1"]
    assert "nameserver" not in resolver.render(resolver.Resolver())


def test_write_is_atomic_0644_and_only_on_a_change(tmp_path):
    path = tmp_path / "resolv.conf"
    os.umask(0o077)
    try:
        assert resolver.write(path, "nameserver 198.18.1.1\n") is True
    finally:
        os.umask(0o022)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    ino = path.stat().st_ino
    assert resolver.write(path, "nameserver 198.18.1.1\n") is False and path.stat().st_ino == ino
    assert resolver.write(path, "nameserver 198.18.1.9\n") is True and path.read_text().endswith("198.18.1.9\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolv.conf"]  # no temporary left


def test_the_subsystem_writes_where_told_and_nowhere_otherwise(tmp_path):
    part = ResolverPart(("198.18.1.1",), ("branch.example",))
    assert asyncio.run(ResolverSubsystem(None).set(part)).ops == ()
    assert list(tmp_path.iterdir()) == []
    sub = ResolverSubsystem(tmp_path / "resolv.conf")
    assert asyncio.run(sub.set(part)).ops == ("resolv.conf: 198.18.1.1 search branch.example",)
    assert asyncio.run(sub.set(part)).ops == ()  # the same text: nothing written
    assert "nameserver 198.18.1.1" in (tmp_path / "resolv.conf").read_text()


def test_a_file_it_cannot_write_is_a_local_error(tmp_path):
    sub = ResolverSubsystem(tmp_path / "missing-dir" / "resolv.conf")
    with pytest.raises(SubsystemError) as err:
        asyncio.run(sub.set(ResolverPart(("198.18.1.1",))))
    assert err.value.subsystem == "resolver" and "cannot write" in err.value.message


def test_compose_takes_the_dhcp_uplinks_leases_in_config_order():
    doc = base_doc()
    doc["uplinks"] = [{"name": "inet", "interface": "wan0", "mode": "dhcp"},
                      {"name": "lte", "interface": "wan1", "mode": "dhcp"}]
    cfg = parse_config(doc)
    leases = {"lte": lease(dns="198.18.2.1", domain="lte.example"),
              "inet": lease(dns="198.18.1.1", domain="inet.example")}
    assert compose(cfg, leases).resolver == ResolverPart(("198.18.1.1", "198.18.2.1"), ("inet.example", "lte.example"))
    assert compose(cfg, {}).resolver == ResolverPart()


def _two_uplinks(**first):
    doc = base_doc()
    doc["uplinks"] = [{"name": "inet", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                       "gateway": "198.18.1.1", **first},
                      {"name": "lte", "interface": "wan1", "mode": "dhcp"}]
    return parse_config(doc)


def test_an_uplinks_configured_name_servers_come_first_and_replace_its_lease():
    cfg = _two_uplinks(dns=["192.0.2.53"])
    leases = {"lte": lease(dns="198.18.2.1", domain="lte.example")}
    assert compose(cfg, leases).resolver == ResolverPart(("192.0.2.53", "198.18.2.1"), ("lte.example",))
    assert compose(_two_uplinks(), leases).resolver == ResolverPart(("198.18.2.1",), ("lte.example",))
    doc = base_doc()
    doc["uplinks"] = [{"name": "lte", "interface": "wan1", "mode": "dhcp", "dns": ["192.0.2.53"]}]
    assert compose(parse_config(doc), leases).resolver == ResolverPart(("192.0.2.53",), ("lte.example",))


@pytest.mark.parametrize("dns, why", [
    (["127.0.0.1"], "not a unicast address"),
    (["224.0.0.251"], "not a unicast address"),
    (["192.0.2.53", "192.0.2.53"], "twice"),
    (["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"], "at most 3"),
    (["dns.example"], "IPv4"),
])
def test_a_bad_dns_list_is_a_config_error_naming_it(dns, why):
    from nsg.model import ConfigError

    with pytest.raises(ConfigError) as err:
        _two_uplinks(dns=dns)
    assert "dns" in str(err.value) and why in str(err.value), str(err.value)


def test_the_controllers_uplink_flag_takes_dns_as_a_plus_list():
    from controller.admin_cli import _uplink

    got = _uplink("name=wan0,interface=eno1,mode=static,address=198.18.1.2/24,gateway=198.18.1.1,"
                  "dns=198.18.1.1+192.0.2.53")
    assert got["dns"] == ["198.18.1.1", "192.0.2.53"] and got["gateway"] == "198.18.1.1"

import pytest

from nsg.uplinks.dhcp import parse_hook_line
from nsg.uplinks.lease import LeaseError, lease_from_env
from nsg.uplinks.udhcpc_hook import PREFIX


def test_lease_from_env():
    lease = lease_from_env({"ip": "198.18.5.10", "mask": "24", "router": "203.0.113.1 198.18.5.1", "mtu": "1400",
                            "lease": "3600"})
    assert str(lease.address) == "198.18.5.10/24"
    assert str(lease.gateway) == "198.18.5.1"  # the off-link router is skipped
    assert lease.mtu == 1400 and lease.lease_s == 3600


@pytest.mark.parametrize(("env", "msg"), [
    ({}, "usable address"),
    ({"ip": "198.18.5.10", "mask": "33"}, "usable address"),
    ({"ip": "224.0.0.1", "mask": "24"}, "not unicast"),
    ({"ip": "198.18.5.10", "mask": "24", "mtu": "12"}, "out of range"),
    ({"ip": "198.18.5.10", "mask": "24", "mtu": "abc"}, "not a number"),
])
def test_bad_leases(env, msg):
    with pytest.raises(LeaseError, match=msg):
        lease_from_env(env)


def test_hook_lines():
    assert parse_hook_line("udhcpc: started") is None
    assert parse_hook_line(PREFIX + "{broken") is None
    assert parse_hook_line(PREFIX + '{"event": "bound", "env": {"ip": "198.18.5.10"}}') == (
        "bound", {"ip": "198.18.5.10"})

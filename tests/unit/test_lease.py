"""A DHCP uplink's lease from udhcpc's hook variables (the hook lines themselves: tests/unit/test_udhcpc.py),
and the uplink's DHCP client on a stand-in udhcpc: leases in, lost leases, restarts with backoff."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Interface

import pytest

from nsg.backoff import Backoff
from nsg.uplinks.dhcp import DhcpClient, udhcpc_argv, write_hook
from nsg.uplinks.lease import Lease, LeaseError, lease_from_env


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
    ({"ip": "255.255.255.255", "mask": "32"}, "not unicast"),
    ({"ip": "198.18.5.10", "mask": "24", "mtu": "12"}, "out of range"),
    ({"ip": "198.18.5.10", "mask": "24", "mtu": "abc"}, "not a number"),
])
def test_bad_leases(env, msg):
    with pytest.raises(LeaseError, match=msg):
        lease_from_env(env)


# A stand-in for "busybox udhcpc -f ... -s HOOK": a lease, a bad lease, a lost lease, then it dies.
FAKE_BUSYBOX = """#!/bin/sh
hook=""
while [ $# -gt 0 ]; do
    if [ "$1" = "-s" ]; then hook="$2"; fi
    shift
done
"$hook" deconfig
ip=198.18.5.10 mask=24 router=198.18.5.1 mtu=1400 lease=3600 "$hook" bound
ip=198.18.5.11 mask=24 mtu=12 "$hook" renew
"$hook" leasefail
exit 3
"""


def test_udhcpc_command_line(tmp_path):
    argv = udhcpc_argv("/bin/busybox", "wan0", tmp_path / "hook")
    assert argv[:5] == ["/bin/busybox", "udhcpc", "-f", "-i", "wan0"]  # foreground, no -q: it stays
    assert argv[argv.index("-s") + 1] == str(tmp_path / "hook") and argv[argv.index("-O") + 1] == "mtu"


def test_client_turns_udhcpc_events_into_leases_and_restarts_it(tmp_path):
    fake = tmp_path / "busybox"
    fake.write_text(FAKE_BUSYBOX)
    fake.chmod(0o700)
    leases: list[tuple[str, Lease | None]] = []
    errors: list[str] = []
    waits: list[float] = []

    class Recorded(Backoff):
        def next(self) -> float:
            waits.append(super().next())
            return waits[-1]

    client = DhcpClient("wan0", "wan0", write_hook(tmp_path), lambda u, lease: leases.append((u, lease)),
                        lambda u, msg: errors.append(msg), busybox=str(fake),
                        backoff=Recorded(0.01, 0.02, jitter=0.2, rand=lambda: 0.5))

    async def main():
        client.start()
        for _ in range(1000):
            if len(errors) >= 6:  # three runs: a bad lease and an exit each
                break
            await asyncio.sleep(0.02)
        await client.stop()

    asyncio.run(main())
    good = Lease(IPv4Interface("198.18.5.10/24"), IPv4Address("198.18.5.1"), 1400, 3600)
    # per run: deconfig -> lost, bound -> the lease, a renew with MTU 12 -> refused, leasefail -> lost, exit -> lost
    assert leases[:4] == [("wan0", None), ("wan0", good), ("wan0", None), ("wan0", None)]
    assert leases[4:8] == leases[:4]
    assert "unusable lease" in errors[0] and "out of range" in errors[0]
    assert errors[1] == "udhcpc exited with status 3"
    assert waits[:3] == [0.01, 0.02, 0.02]  # restarts back off: doubling up to the cap (jitter fixed here)

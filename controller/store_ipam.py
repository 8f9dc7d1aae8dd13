"""The store's address management: the system IP pool (one /32 per gateway, the controller's own at
the top) and the addresses of tenant apps and VMs inside their subnets.

It allocates; it does not write the rows that hold the addresses. The gateways' owner
(controller/store_gateways.py) and the workloads' owner (controller/store_workloads.py) ask here,
inside their own write transaction, and insert what they were given: if their write fails, the
allocation rolls back with it (the pool's cursor too).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from sqlite3 import Cursor

from controller.inputs import Conflict, StoreError, _address
from controller.store_db import Database, put_setting, setting

DEFAULT_SYSTEM_POOL = IPv4Network("198.19.255.0/24")


class Ipam:
    """The pool is fixed when the database is made; addresses already handed out depend on it."""

    def __init__(self, db: Database, requested: IPv4Network | None = None):
        self._db = db
        self.system_pool = self._settle_pool(requested)

    def _settle_pool(self, requested: IPv4Network | None) -> IPv4Network:
        with self._db.tx(write=True) as cur:
            stored = setting(cur, "system_pool")
            if stored is None:
                put_setting(cur, "system_pool", str(requested or DEFAULT_SYSTEM_POOL))
                return requested or DEFAULT_SYSTEM_POOL
            if requested is not None and IPv4Network(stored) != requested:
                raise Conflict("system_pool", f"this database uses the system IP pool {stored}, not {requested}")
            return IPv4Network(stored)

    @property
    def controller_ip(self) -> IPv4Address:
        """The controller's own system IP: the last host of the pool (.254 of a /24)."""
        return self.system_pool.broadcast_address - 1

    def system_ip(self, cur: Cursor) -> IPv4Address:
        """The next free host of the pool after the last one handed out (wrapping around), so a
        deleted gateway's system IP goes back into use as late as possible. Network, broadcast
        and the controller's own address are never handed out."""
        first = int(self.system_pool.network_address) + 1
        last = int(self.controller_ip) - 1
        size = last - first + 1
        taken = {int(IPv4Address(r[0])) for r in cur.execute("SELECT system_ip FROM gateways")}
        start = int(setting(cur, "next_system_ip") or first)
        if not first <= start <= last:
            start = first
        for i in range(size):
            candidate = first + (start - first + i) % size
            if candidate not in taken:
                put_setting(cur, "next_system_ip", str(first + (candidate + 1 - first) % size))
                return IPv4Address(candidate)
        raise Conflict("system_ip", f"the system IP pool {self.system_pool} is exhausted")

    @staticmethod
    def workload_address(cur: Cursor, subnet_id: int, cidr: IPv4Network, gateway: IPv4Address,
                         want: object) -> IPv4Address:
        """An app's or VM's address: the one asked for, checked; or the highest free host of the subnet
        (LAN hosts' DHCP pools customarily sit at the bottom). Unique across the enterprise: a subnet is
        one L2, wherever its gateways are."""
        taken = {IPv4Address(r[0]) for r in cur.execute(
            "SELECT address FROM apps WHERE subnet_id = ? UNION SELECT address FROM vms WHERE subnet_id = ?",
            (subnet_id, subnet_id))}
        if want is not None:
            ip = _address(want, "address")
            if ip not in cidr or ip in (cidr.network_address, cidr.broadcast_address, gateway):
                raise StoreError("address", f"{ip} is not a free host address of {cidr} (the gateway is {gateway})")
            if ip in taken:
                raise Conflict("address", f"{ip} is already an app's or a VM's address in this subnet")
            return ip
        for n in range(int(cidr.broadcast_address) - 1, int(cidr.network_address), -1):
            ip = IPv4Address(n)
            if ip != gateway and ip not in taken:
                return ip
        raise Conflict("address", f"no free address left in {cidr}")

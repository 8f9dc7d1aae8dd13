"""The store's enterprises and their subnets (``store.enterprises``).

An enterprise is the unit of generation: every write that changes what its gateways see bumps its
``generation`` (``bump``, used by every part of the store that writes such a thing) and is test-rendered
before it commits (the ``check_render`` each writer is given is ``Documents.check_render``; taking it
as a callable keeps controller/store_documents.py, which reads every part, out of their imports).
``enterprise_id`` and ``enterprise_rec`` are the lookups the other parts share.

Cross-responsibility: ``delete_subnet`` is refused while a gateway has LAN ports in the subnet or an app
or VM lives in it (rows of the gateways' and the workloads' tables; reading them here keeps the refusal
in the same transaction as the delete). ``add_subnet`` keeps subnets out of the system IP pool (IPAM).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pydantic import TypeAdapter

from controller.enterprise import EnterpriseIpsec
from controller.inputs import Conflict, NotFound, StoreError, _address, _name, _network, _now, _validated
from controller.store_db import Database, RenderCheck, taken
from controller.store_ipam import Ipam
from nsg.model.config import VNI_MAX, VNI_MIN, PortSecurity

TRANSPORTS = ("plain", "esp")


@dataclass(frozen=True)
class EnterpriseRec:
    name: str
    transport: str
    ipsec: EnterpriseIpsec | None
    generation: int
    created: str


DEFAULT_PORT_SECURITY = PortSecurity()


@dataclass(frozen=True)
class SubnetRec:
    enterprise: str
    name: str
    vni: int
    cidr: IPv4Network
    gateway: IPv4Address
    port_security: PortSecurity | None = DEFAULT_PORT_SECURITY


OFF = "off"  # subnets.port_security: the operator turned LAN port security off (NULL: the defaults)


def port_security_column(ps: PortSecurity | None) -> str | None:
    """What subnets.port_security holds: NULL for the default limits (so a later release's defaults
    apply to subnets that never chose their own), 'off', or the limits as JSON."""
    if ps is None:
        return OFF
    return None if ps == DEFAULT_PORT_SECURITY else ps.model_dump_json()


def port_security_of(column: str | None) -> PortSecurity | None:
    if column is None:
        return DEFAULT_PORT_SECURITY
    return None if column == OFF else PortSecurity.model_validate_json(column)


def enterprise_id(cur: sqlite3.Cursor, name: str, field: str = "enterprise") -> int:
    row = cur.execute("SELECT id FROM enterprises WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(field, f"no enterprise named {name!r}")
    return row[0]


def enterprise_rec(cur: sqlite3.Cursor, name: str) -> EnterpriseRec:
    row = cur.execute("SELECT name, transport, ipsec, generation, created FROM enterprises WHERE name = ?",
                      (name,)).fetchone()
    if row is None:
        raise NotFound("enterprise", f"no enterprise named {name!r}")
    ipsec = None if row[2] is None else EnterpriseIpsec.model_validate_json(row[2])
    return EnterpriseRec(row[0], row[1], ipsec, row[3], row[4])


def bump(cur: sqlite3.Cursor, ent_id: int) -> None:
    """A new generation of the enterprise: its gateways get their configs again."""
    cur.execute("UPDATE enterprises SET generation = generation + 1 WHERE id = ?", (ent_id,))


class Enterprises:
    """Enterprises and subnets. Uses IPAM (the pool subnets must stay out of) and the render check."""

    def __init__(self, db: Database, ipam: Ipam, check_render: RenderCheck):
        self._db = db
        self._ipam = ipam
        self._check_render = check_render

    # -- enterprises -------------------------------------------------------------------------------

    def create(
        self, name: str, *, transport: str = "plain", ipsec: EnterpriseIpsec | Mapping[str, Any] | None = None
    ) -> EnterpriseRec:
        """A new enterprise. With transport "esp" its gateways authenticate with their own LDevIDs unless the
        settings choose PSKs ({"psk": secret}: each pair of gateways gets a key derived from it)."""
        name = _name(name)
        if transport not in TRANSPORTS:
            raise StoreError("transport", f"must be one of {', '.join(TRANSPORTS)}")
        settings = dict(ipsec.model_dump(exclude_none=True) if isinstance(ipsec, EnterpriseIpsec) else ipsec or {})
        if ipsec is not None or transport == "esp":
            # no data-plane secret by default: every gateway authenticates with its own LDevID
            cfg = _validated(TypeAdapter(EnterpriseIpsec), settings, "ipsec")
            doc = cfg.model_dump_json(exclude_none=True)
        else:
            doc = None
        with self._db.tx(write=True) as cur:
            taken(cur, "SELECT 1 FROM enterprises WHERE name = ?", (name,), "name", f"enterprise {name!r}")
            cur.execute("INSERT INTO enterprises (name, transport, ipsec, created) VALUES (?, ?, ?, ?)",
                        (name, transport, doc, _now()))
            return enterprise_rec(cur, name)

    def get(self, name: str) -> EnterpriseRec:
        with self._db.tx() as cur:
            return enterprise_rec(cur, name)

    def list(self) -> list[EnterpriseRec]:
        with self._db.tx() as cur:
            names = [r[0] for r in cur.execute("SELECT name FROM enterprises ORDER BY name").fetchall()]
            return [enterprise_rec(cur, n) for n in names]

    def delete(self, name: str) -> None:
        """Removes the enterprise and its subnets; refused while it still has gateways."""
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, name)
            gws = [r[0] for r in cur.execute("SELECT name FROM gateways WHERE enterprise_id = ? ORDER BY name",
                                             (ent_id,))]
            if gws:
                raise Conflict("enterprise", f"enterprise {name!r} still has gateways: {', '.join(gws)}")
            cur.execute("DELETE FROM enterprises WHERE id = ?", (ent_id,))

    # -- subnets -----------------------------------------------------------------------------------

    def add_subnet(self, enterprise: str, name: str, *, vni: int, cidr: str | IPv4Network,
                   gateway: str | IPv4Address, port_security: PortSecurity | None = DEFAULT_PORT_SECURITY) -> SubnetRec:
        name = _name(name)
        if not isinstance(vni, int) or isinstance(vni, bool) or not VNI_MIN <= vni <= VNI_MAX:
            raise StoreError("vni", f"must be an integer from {VNI_MIN} to {VNI_MAX} (24 bits, RFC 7348 section 5)")
        net = _network(cidr, "cidr")
        if net.prefixlen > 30:
            raise StoreError("cidr", f"{net} leaves no room for hosts (longest prefix is /30)")
        gw = _address(gateway, "gateway")
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise StoreError("gateway", f"{gw} is not a host address of {net}")
        pool = self._ipam.system_pool
        if net.overlaps(pool):
            raise StoreError("cidr", f"{net} overlaps the controller's system IP pool {pool}")
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            taken(cur, "SELECT 1 FROM subnets WHERE enterprise_id = ? AND name = ?", (ent_id, name),
                  "name", f"subnet {name!r}")
            taken(cur, "SELECT 1 FROM subnets WHERE enterprise_id = ? AND vni = ?", (ent_id, vni),
                  "vni", f"a subnet with VNI {vni}")
            for other, other_cidr in cur.execute("SELECT name, cidr FROM subnets WHERE enterprise_id = ?", (ent_id,)):
                if net.overlaps(IPv4Network(other_cidr)):
                    raise StoreError("cidr", f"{net} overlaps subnet {other!r} ({other_cidr})")
            cur.execute("INSERT INTO subnets (enterprise_id, name, vni, cidr, gateway, port_security) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (ent_id, name, vni, str(net), str(gw),
                                                      port_security_column(port_security)))
            bump(cur, ent_id)
            self._check_render(cur, ent_id)
        return SubnetRec(enterprise, name, vni, net, gw, port_security)

    def set_port_security(self, enterprise: str, name: str, port_security: PortSecurity | None) -> SubnetRec:
        """A subnet's LAN port security, at every site (a new generation goes out when it changed)."""
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            row = cur.execute("SELECT id, port_security FROM subnets WHERE enterprise_id = ? AND name = ?",
                              (ent_id, name)).fetchone()
            if row is None:
                raise NotFound("name", f"no subnet named {name!r} in enterprise {enterprise!r}")
            column = port_security_column(port_security)
            if column != row[1]:
                cur.execute("UPDATE subnets SET port_security = ? WHERE id = ?", (column, row[0]))
                bump(cur, ent_id)
                self._check_render(cur, ent_id)
        return next(s for s in self.list_subnets(enterprise) if s.name == name)

    def list_subnets(self, enterprise: str) -> list[SubnetRec]:
        with self._db.tx() as cur:
            ent_id = enterprise_id(cur, enterprise)
            rows = cur.execute("SELECT name, vni, cidr, gateway, port_security FROM subnets WHERE enterprise_id = ? "
                               "ORDER BY vni", (ent_id,)).fetchall()
        return [SubnetRec(enterprise, n, v, IPv4Network(c), IPv4Address(g), port_security_of(ps))
                for n, v, c, g, ps in rows]

    def delete_subnet(self, enterprise: str, name: str) -> None:
        """Refused while a gateway has LAN ports in it, or an app or VM lives in it."""
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            row = cur.execute("SELECT id FROM subnets WHERE enterprise_id = ? AND name = ?", (ent_id, name)).fetchone()
            if row is None:
                raise NotFound("name", f"no subnet named {name!r} in enterprise {enterprise!r}")
            users = [r[0] for r in cur.execute(
                "SELECT DISTINCT g.name FROM gateway_ports p JOIN gateways g ON g.id = p.gateway_id "
                "WHERE p.subnet_id = ? ORDER BY g.name", (row[0],))]
            if users:
                raise Conflict("name", f"subnet {name!r} has LAN ports on gateways: {', '.join(users)}")
            apps = [f"{g}/{a}" for g, a in cur.execute(
                "SELECT g.name, a.name FROM apps a JOIN gateways g ON g.id = a.gateway_id WHERE a.subnet_id = ? "
                "UNION SELECT g.name, v.name FROM vms v JOIN gateways g ON g.id = v.gateway_id "
                "WHERE v.subnet_id = ? ORDER BY 1, 2", (row[0], row[0]))]
            if apps:
                raise Conflict("name", f"subnet {name!r} has apps or VMs: {', '.join(apps)}")
            cur.execute("DELETE FROM subnets WHERE id = ?", (row[0],))
            bump(cur, ent_id)

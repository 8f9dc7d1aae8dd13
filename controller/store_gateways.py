"""The store's gateways (``store.gateways``): made, changed, listed, deleted, found by serial number,
activated, and their identities reset.

Everything that enters is validated here (names, serials, uplinks and LAN ports through
``controller.inputs``), and every write that changes what the enterprise's gateways see bumps its
generation and is test-rendered before it commits (``check_render``, i.e. ``Documents.check_render``).
Activation codes are kept only as salted scrypt hashes (people choose them, so they need a slow hash).

Cross-responsibility operations live here, because each starts from a gateway:
- ``add`` takes the next system IP from IPAM (controller/store_ipam.py) in the same transaction;
- ``delete``, a serial change in ``update`` (the box was replaced) and ``reset_identity`` (the box lost
  its state and must enroll anew) revoke the device's certificates through
  ``Certificates.revoke_device`` (controller/store_certs.py), which knows device serials, not gateway
  names. ``gateway_id`` and ``gateway_rec`` are the lookups the other parts share.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from controller.enterprise import UplinkDef
from controller.inputs import (
    _UPLINKS,
    NotFound,
    StoreError,
    _activation,
    _dummy_hash,
    _name,
    _now,
    _ports,
    _serial,
    _uplinks,
    verify_activation_code,
)
from controller.store_certs import Certificates
from controller.store_db import Database, RenderCheck, taken
from controller.store_enterprises import bump, enterprise_id
from controller.store_ipam import Ipam


@dataclass(frozen=True)
class GatewayRec:
    enterprise: str
    name: str
    serial: str
    system_ip: IPv4Address
    uplinks: tuple[UplinkDef, ...]
    ports: dict[str, tuple[str, ...]]
    behind_nat: bool
    has_activation_code: bool
    created: str
    role: str = "edge"


UNSET: Any = object()  # Gateways.update: "leave this field as it is"


def gateway_id(cur: sqlite3.Cursor, name: str) -> tuple[int, int]:
    """The gateway's row id and its enterprise's."""
    row = cur.execute("SELECT id, enterprise_id FROM gateways WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound("name", f"no gateway named {name!r}")
    return row[0], row[1]


def gateway_rec(cur: sqlite3.Cursor, gw_id: int) -> GatewayRec:
    row = cur.execute(
        "SELECT e.name, g.name, g.serial, g.system_ip, g.uplinks, g.behind_nat, g.activation_hash, g.created, "
        "g.role "
        "FROM gateways g JOIN enterprises e ON e.id = g.enterprise_id WHERE g.id = ?", (gw_id,)).fetchone()
    ports: dict[str, list[str]] = {}
    for subnet, iface in cur.execute(
            "SELECT s.name, p.interface FROM gateway_ports p JOIN subnets s ON s.id = p.subnet_id "
            "WHERE p.gateway_id = ? ORDER BY s.vni, p.rowid", (gw_id,)):
        ports.setdefault(subnet, []).append(iface)
    return GatewayRec(enterprise=row[0], name=row[1], serial=row[2], system_ip=IPv4Address(row[3]),
                      uplinks=_UPLINKS.validate_json(row[4]), ports={k: tuple(v) for k, v in ports.items()},
                      behind_nat=bool(row[5]), has_activation_code=row[6] is not None, created=row[7],
                      role=row[8])


def _set_ports(cur: sqlite3.Cursor, ent_id: int, gw_id: int, lan: Mapping[str, Sequence[str]]) -> None:
    for subnet, ifaces in lan.items():
        row = cur.execute("SELECT id FROM subnets WHERE enterprise_id = ? AND name = ?",
                          (ent_id, subnet)).fetchone()
        if row is None:
            raise StoreError(f"ports.{subnet}", f"the enterprise has no subnet named {subnet!r}")
        cur.executemany("INSERT INTO gateway_ports VALUES (?, ?, ?)", [(gw_id, row[0], i) for i in ifaces])


class Gateways:
    """Gateways. Uses IPAM (system IPs), the certificates (revocation) and the render check."""

    def __init__(self, db: Database, ipam: Ipam, certificates: Certificates, check_render: RenderCheck):
        self._db = db
        self._ipam = ipam
        self._certificates = certificates
        self._check_render = check_render

    def add(self, enterprise: str, name: str, *, serial: str, uplinks: Sequence[UplinkDef | Mapping[str, Any]],
            ports: Mapping[str, Sequence[str]] | None = None, behind_nat: bool = False,
            activation_code: str | None = None, role: str = "edge") -> GatewayRec:
        """A new gateway with the next free system IP of the pool."""
        if role not in ("edge", "hub"):
            raise StoreError("role", f"role {role!r} is not 'edge' or 'hub'")
        name = _name(name)
        serial = _serial(serial)
        ups = _uplinks(uplinks)
        lan = _ports(ports or {}, ups)
        code_hash = None if activation_code is None else _activation(activation_code)
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            taken(cur, "SELECT 1 FROM gateways WHERE name = ?", (name,), "name", f"gateway {name!r}")
            taken(cur, "SELECT 1 FROM gateways WHERE serial = ?", (serial,), "serial",
                  f"a gateway with serial number {serial!r}")
            ip = self._ipam.system_ip(cur)
            cur.execute(
                "INSERT INTO gateways (enterprise_id, name, serial, system_ip, activation_hash, uplinks, behind_nat,"
                " created, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ent_id, name, serial, str(ip), code_hash, _UPLINKS.dump_json(ups).decode(), int(behind_nat), _now(),
                 role))
            gw_id = cur.lastrowid
            assert gw_id is not None
            _set_ports(cur, ent_id, gw_id, lan)
            bump(cur, ent_id)
            self._check_render(cur, ent_id)
            return gateway_rec(cur, gw_id)

    def update(self, name: str, *, serial: Any = UNSET, uplinks: Any = UNSET, ports: Any = UNSET,
               behind_nat: Any = UNSET, activation_code: Any = UNSET) -> GatewayRec:
        """Change the given fields (activation_code=None removes the code). Name and system IP stay.
        A new serial (the box was replaced) revokes the old box's certificates."""
        with self._db.tx(write=True) as cur:
            gw_id, ent_id = gateway_id(cur, name)
            old = gateway_rec(cur, gw_id)
            if serial is not UNSET and _serial(serial) != old.serial:
                taken(cur, "SELECT 1 FROM gateways WHERE serial = ?", (serial,), "serial",
                      f"a gateway with serial number {serial!r}")
                cur.execute("UPDATE gateways SET serial = ? WHERE id = ?", (serial, gw_id))
                self._certificates.revoke_device(cur, old.serial, "gateway replaced (new serial)")
                if cur.execute("SELECT ipsec FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0] is not None:
                    bump(cur, ent_id)  # its peers bind it to its serial (ipsec auth "ldevid")
            if activation_code is not UNSET:
                code_hash = None if activation_code is None else _activation(activation_code)
                cur.execute("UPDATE gateways SET activation_hash = ? WHERE id = ?", (code_hash, gw_id))
            ups = old.uplinks if uplinks is UNSET else _uplinks(uplinks)
            lan = _ports(old.ports if ports is UNSET else ports, ups)  # old ports must not clash with new uplinks
            nat = old.behind_nat if behind_nat is UNSET else bool(behind_nat)
            if (ups, lan, nat) != (old.uplinks, old.ports, old.behind_nat):
                cur.execute("UPDATE gateways SET uplinks = ?, behind_nat = ? WHERE id = ?",
                            (_UPLINKS.dump_json(ups).decode(), int(nat), gw_id))
                cur.execute("DELETE FROM gateway_ports WHERE gateway_id = ?", (gw_id,))
                _set_ports(cur, ent_id, gw_id, lan)
                bump(cur, ent_id)
                self._check_render(cur, ent_id)
            return gateway_rec(cur, gw_id)

    def get(self, name: str) -> GatewayRec:
        with self._db.tx() as cur:
            return gateway_rec(cur, gateway_id(cur, name)[0])

    def list(self, enterprise: str) -> list[GatewayRec]:
        with self._db.tx() as cur:
            ent_id = enterprise_id(cur, enterprise)
            ids = [r[0] for r in cur.execute("SELECT id FROM gateways WHERE enterprise_id = ? ORDER BY name",
                                             (ent_id,))]
            return [gateway_rec(cur, i) for i in ids]

    def delete(self, name: str) -> None:
        """Its system IP becomes free, but the pool hands out the others first; its certificates are revoked."""
        with self._db.tx(write=True) as cur:
            gw_id, ent_id = gateway_id(cur, name)
            serial = gateway_rec(cur, gw_id).serial
            cur.execute("DELETE FROM gateways WHERE id = ?", (gw_id,))
            bump(cur, ent_id)
            self._certificates.revoke_device(cur, serial, "gateway deleted")  # its tunnels are refused everywhere

    def by_serial(self, serial: str) -> GatewayRec | None:
        with self._db.tx() as cur:
            row = cur.execute("SELECT id FROM gateways WHERE serial = ?", (serial,)).fetchone()
            return gateway_rec(cur, row[0]) if row is not None else None

    def check_activation(self, serial: str, code: str | None) -> bool:
        """Does ``code`` activate the gateway with this serial? True also when it needs no code."""
        with self._db.tx() as cur:
            row = cur.execute("SELECT activation_hash FROM gateways WHERE serial = ?", (serial,)).fetchone()
        if row is not None and row[0] is None:
            return True
        # An unknown serial costs a guess as much as a known one, so timing does not tell them apart.
        stored = row[0] if row is not None else _dummy_hash()
        return verify_activation_code(stored, code or "") and row is not None and code is not None

    def reset_identity(self, name: str) -> tuple[str, list[str]]:
        """The operator's reset of a box's identity: revoke its valid certificates (the new revocation
        list goes to gateways with their configs), so that it may enroll once more with its IDevID.
        Returns its serial and the serial numbers (hex) of what was revoked."""
        with self._db.tx(write=True) as cur:
            serial = gateway_rec(cur, gateway_id(cur, name)[0]).serial
            held = self._certificates.revoke_device(cur, serial, "identity reset by the operator")
        return serial, held

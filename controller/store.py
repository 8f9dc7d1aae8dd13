"""The controller's store: enterprises, subnets, gateways and admin tokens in one SQLite file.

Everything that enters is validated here (names, addresses, uplinks through ``nsg.model``), so
a store that accepted a write can always render every gateway's config: each write that changes
what gateways see bumps the enterprise's generation and is test-rendered before it commits.

Secrets are kept only as hashes: admin tokens as SHA-256 (they are 256-bit random, so a fast hash
is enough), activation codes as salted scrypt (people choose those, so they need a slow one).
By default (IPsec auth "ldevid") the controller holds no data-plane secret at all; an enterprise
that chose PSKs keeps its secret here as is, and each pair of gateways gets a key derived from it.

One connection, guarded by a lock, serves the process; WAL lets ``nsg-controller token create``
write to the file while a server has it open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.enterprise import Enterprise, EnterpriseIpsec, GatewayDef, SubnetDef, UplinkDef
from controller.inputs import (
    _UPLINKS,
    Conflict,
    NotFound,
    StoreError,
    _activation,
    _address,
    _dummy_hash,
    _name,
    _network,
    _now,
    _pool,
    _ports,
    _serial,
    _uplinks,
    _validated,
    verify_activation_code,
)
from controller.mesh import render
from controller.store_certs import MIGRATION as CERTIFICATES_MIGRATION
from controller.store_certs import CertificateRecords
from controller.store_workloads import WorkloadRecords
from controller.tokens import TokenRecords  # admin tokens: controller/tokens.py
from nsg.model import ConfigError, GatewayConfig
from nsg.model.config import VNI_MAX, VNI_MIN
from nsg.model.policy import PolicyConfig
from nsg.model.qos import QosConfig

DEFAULT_SYSTEM_POOL = IPv4Network("198.19.255.0/24")
TRANSPORTS = ("plain", "esp")

# Each migration is a list of single statements, applied in one transaction with its version row.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE enterprises (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            transport TEXT NOT NULL CHECK (transport IN ('plain', 'esp')), ipsec TEXT,
            generation INTEGER NOT NULL DEFAULT 1, created TEXT NOT NULL)""",
        """CREATE TABLE subnets (id INTEGER PRIMARY KEY,
            enterprise_id INTEGER NOT NULL REFERENCES enterprises(id) ON DELETE CASCADE,
            name TEXT NOT NULL, vni INTEGER NOT NULL, cidr TEXT NOT NULL, gateway TEXT NOT NULL,
            UNIQUE (enterprise_id, name), UNIQUE (enterprise_id, vni))""",
        """CREATE TABLE gateways (id INTEGER PRIMARY KEY,
            enterprise_id INTEGER NOT NULL REFERENCES enterprises(id) ON DELETE RESTRICT,
            name TEXT NOT NULL UNIQUE, serial TEXT NOT NULL UNIQUE, system_ip TEXT NOT NULL UNIQUE,
            activation_hash TEXT, uplinks TEXT NOT NULL, behind_nat INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL)""",
        """CREATE TABLE gateway_ports (
            gateway_id INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
            subnet_id INTEGER NOT NULL REFERENCES subnets(id) ON DELETE RESTRICT,
            interface TEXT NOT NULL, PRIMARY KEY (gateway_id, interface))""",
        """CREATE TABLE tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            sha256 TEXT NOT NULL UNIQUE, created TEXT NOT NULL)""",
    ),
    2: (
        "ALTER TABLE gateways ADD COLUMN role TEXT NOT NULL DEFAULT 'edge' CHECK (role IN ('edge', 'hub'))",
    ),
    3: (
        # image tarballs an enterprise uploaded (the bytes live in the device site's image directory)
        """CREATE TABLE images (id INTEGER PRIMARY KEY,
            enterprise_id INTEGER NOT NULL REFERENCES enterprises(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL, size INTEGER NOT NULL, refs TEXT NOT NULL, created TEXT NOT NULL,
            UNIQUE (enterprise_id, sha256))""",
        # tenant apps: the whole AppDef as JSON; subnet and address as columns so SQLite keeps them unique
        """CREATE TABLE apps (id INTEGER PRIMARY KEY,
            gateway_id INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
            subnet_id INTEGER NOT NULL REFERENCES subnets(id) ON DELETE RESTRICT,
            name TEXT NOT NULL, address TEXT NOT NULL, spec TEXT NOT NULL, created TEXT NOT NULL,
            UNIQUE (gateway_id, name), UNIQUE (subnet_id, address))""",
        """CREATE TABLE vms (id INTEGER PRIMARY KEY,
            gateway_id INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
            subnet_id INTEGER NOT NULL REFERENCES subnets(id) ON DELETE RESTRICT,
            name TEXT NOT NULL, address TEXT NOT NULL, spec TEXT NOT NULL, created TEXT NOT NULL,
            UNIQUE (gateway_id, name), UNIQUE (subnet_id, address))""",
        "ALTER TABLE enterprises ADD COLUMN policy TEXT",  # the firewall policy (PolicyConfig JSON), or NULL
        "ALTER TABLE enterprises ADD COLUMN qos TEXT",  # the QoS profile (QosConfig JSON), or NULL
    ),
    4: (
        "ALTER TABLE tokens ADD COLUMN expires TEXT",  # admin tokens may expire (ISO 8601 UTC), NULL: never
    ),
    5: CERTIFICATES_MIGRATION,  # LDevIDs issued and revoked (controller/store_certs.py)
}
SCHEMA_VERSION = max(MIGRATIONS)


@dataclass(frozen=True)
class EnterpriseRec:
    name: str
    transport: str
    ipsec: EnterpriseIpsec | None
    generation: int
    created: str


@dataclass(frozen=True)
class SubnetRec:
    enterprise: str
    name: str
    vni: int
    cidr: IPv4Network
    gateway: IPv4Address


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


UNSET: Any = object()  # update_gateway: "leave this field as it is"
_POLICY = TypeAdapter(PolicyConfig)
_QOS = TypeAdapter(QosConfig)

class Store(WorkloadRecords, TokenRecords, CertificateRecords):
    """The controller's state in one SQLite file (created 0600, WAL, migrated on open)."""

    def __init__(self, path: str | Path, *, system_pool: IPv4Network | str | None = None):
        self.path = Path(path)
        requested = None if system_pool is None else _pool(system_pool)
        if not self.path.exists():  # it may hold a PSK secret: nobody else reads it; -wal/-shm get the same mode
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA foreign_keys = ON")
        self.journal_mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        try:
            self._migrate()
            self.system_pool = self._settle_pool(requested)
        except BaseException:
            self._db.close()
            raise

    def _settle_pool(self, requested: IPv4Network | None) -> IPv4Network:
        """The pool is chosen when the database is made; addresses already handed out depend on it."""
        with self._tx(write=True) as cur:
            stored = self._setting(cur, "system_pool")
            if stored is None:
                self._set(cur, "system_pool", str(requested or DEFAULT_SYSTEM_POOL))
                return requested or DEFAULT_SYSTEM_POOL
            if requested is not None and IPv4Network(stored) != requested:
                raise Conflict("system_pool", f"this database uses the system IP pool {stored}, not {requested}")
            return IPv4Network(stored)

    @property
    def controller_ip(self) -> IPv4Address:
        """The controller's own system IP: the last host of the pool (.254 of a /24)."""
        return self.system_pool.broadcast_address - 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[sqlite3.Cursor]:
        """One transaction; IMMEDIATE for writes, so checks and inserts see the same state."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def schema_version(self) -> int:
        with self._tx() as cur:
            return cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]

    def _migrate(self) -> None:
        with self._tx(write=True) as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied TEXT)")
            have = cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            if have > SCHEMA_VERSION:
                raise StoreError("schema", f"database schema {have} is newer than this controller's {SCHEMA_VERSION}")
            for version in sorted(v for v in MIGRATIONS if v > have):
                for statement in MIGRATIONS[version]:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, _now()))

    @staticmethod
    def _setting(cur: sqlite3.Cursor, key: str) -> str | None:
        row = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set(cur: sqlite3.Cursor, key: str, value: str) -> None:
        cur.execute("INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value))

    @staticmethod
    def _taken(cur: sqlite3.Cursor, sql: str, args: tuple[object, ...], field: str, what: str) -> None:
        if cur.execute(sql, args).fetchone() is not None:
            raise Conflict(field, f"{what} already exists")

    @staticmethod
    def _enterprise_id(cur: sqlite3.Cursor, name: str, field: str = "enterprise") -> int:
        row = cur.execute("SELECT id FROM enterprises WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(field, f"no enterprise named {name!r}")
        return row[0]

    @staticmethod
    def _gateway_id(cur: sqlite3.Cursor, name: str) -> tuple[int, int]:
        row = cur.execute("SELECT id, enterprise_id FROM gateways WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("name", f"no gateway named {name!r}")
        return row[0], row[1]

    @staticmethod
    def _bump(cur: sqlite3.Cursor, ent_id: int) -> None:
        cur.execute("UPDATE enterprises SET generation = generation + 1 WHERE id = ?", (ent_id,))

    # -- enterprises -------------------------------------------------------------------------------

    def create_enterprise(
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
        with self._tx(write=True) as cur:
            self._taken(cur, "SELECT 1 FROM enterprises WHERE name = ?", (name,), "name", f"enterprise {name!r}")
            cur.execute("INSERT INTO enterprises (name, transport, ipsec, created) VALUES (?, ?, ?, ?)",
                        (name, transport, doc, _now()))
            return self._enterprise(cur, name)

    @staticmethod
    def _enterprise(cur: sqlite3.Cursor, name: str) -> EnterpriseRec:
        row = cur.execute("SELECT name, transport, ipsec, generation, created FROM enterprises WHERE name = ?",
                          (name,)).fetchone()
        if row is None:
            raise NotFound("enterprise", f"no enterprise named {name!r}")
        ipsec = None if row[2] is None else EnterpriseIpsec.model_validate_json(row[2])
        return EnterpriseRec(row[0], row[1], ipsec, row[3], row[4])

    def get_enterprise(self, name: str) -> EnterpriseRec:
        with self._tx() as cur:
            return self._enterprise(cur, name)

    def list_enterprises(self) -> list[EnterpriseRec]:
        with self._tx() as cur:
            names = [r[0] for r in cur.execute("SELECT name FROM enterprises ORDER BY name").fetchall()]
            return [self._enterprise(cur, n) for n in names]

    def delete_enterprise(self, name: str) -> None:
        """Removes the enterprise and its subnets; refused while it still has gateways."""
        with self._tx(write=True) as cur:
            ent_id = self._enterprise_id(cur, name)
            gws = [r[0] for r in cur.execute("SELECT name FROM gateways WHERE enterprise_id = ? ORDER BY name",
                                             (ent_id,))]
            if gws:
                raise Conflict("enterprise", f"enterprise {name!r} still has gateways: {', '.join(gws)}")
            cur.execute("DELETE FROM enterprises WHERE id = ?", (ent_id,))

    # -- subnets -----------------------------------------------------------------------------------

    def add_subnet(self, enterprise: str, name: str, *, vni: int, cidr: str | IPv4Network,
                   gateway: str | IPv4Address) -> SubnetRec:
        name = _name(name)
        if not isinstance(vni, int) or isinstance(vni, bool) or not VNI_MIN <= vni <= VNI_MAX:
            raise StoreError("vni", f"must be an integer from {VNI_MIN} to {VNI_MAX} (24 bits, RFC 7348 section 5)")
        net = _network(cidr, "cidr")
        if net.prefixlen > 30:
            raise StoreError("cidr", f"{net} leaves no room for hosts (longest prefix is /30)")
        gw = _address(gateway, "gateway")
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise StoreError("gateway", f"{gw} is not a host address of {net}")
        if net.overlaps(self.system_pool):
            raise StoreError("cidr", f"{net} overlaps the controller's system IP pool {self.system_pool}")
        with self._tx(write=True) as cur:
            ent_id = self._enterprise_id(cur, enterprise)
            self._taken(cur, "SELECT 1 FROM subnets WHERE enterprise_id = ? AND name = ?", (ent_id, name),
                        "name", f"subnet {name!r}")
            self._taken(cur, "SELECT 1 FROM subnets WHERE enterprise_id = ? AND vni = ?", (ent_id, vni),
                        "vni", f"a subnet with VNI {vni}")
            for other, other_cidr in cur.execute("SELECT name, cidr FROM subnets WHERE enterprise_id = ?", (ent_id,)):
                if net.overlaps(IPv4Network(other_cidr)):
                    raise StoreError("cidr", f"{net} overlaps subnet {other!r} ({other_cidr})")
            cur.execute("INSERT INTO subnets (enterprise_id, name, vni, cidr, gateway) VALUES (?, ?, ?, ?, ?)",
                        (ent_id, name, vni, str(net), str(gw)))
            self._bump(cur, ent_id)
            self._check_render(cur, ent_id)
        return SubnetRec(enterprise, name, vni, net, gw)

    def list_subnets(self, enterprise: str) -> list[SubnetRec]:
        with self._tx() as cur:
            ent_id = self._enterprise_id(cur, enterprise)
            rows = cur.execute("SELECT name, vni, cidr, gateway FROM subnets WHERE enterprise_id = ? ORDER BY vni",
                               (ent_id,)).fetchall()
        return [SubnetRec(enterprise, n, v, IPv4Network(c), IPv4Address(g)) for n, v, c, g in rows]

    def delete_subnet(self, enterprise: str, name: str) -> None:
        """Refused while a gateway has LAN ports in it."""
        with self._tx(write=True) as cur:
            ent_id = self._enterprise_id(cur, enterprise)
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
            self._bump(cur, ent_id)

    # -- gateways ----------------------------------------------------------------------------------

    def add_gateway(self, enterprise: str, name: str, *, serial: str, uplinks: Sequence[UplinkDef | Mapping[str, Any]],
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
        with self._tx(write=True) as cur:
            ent_id = self._enterprise_id(cur, enterprise)
            self._taken(cur, "SELECT 1 FROM gateways WHERE name = ?", (name,), "name", f"gateway {name!r}")
            self._taken(cur, "SELECT 1 FROM gateways WHERE serial = ?", (serial,), "serial",
                        f"a gateway with serial number {serial!r}")
            ip = self._allocate(cur)
            cur.execute(
                "INSERT INTO gateways (enterprise_id, name, serial, system_ip, activation_hash, uplinks, behind_nat,"
                " created, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ent_id, name, serial, str(ip), code_hash, _UPLINKS.dump_json(ups).decode(), int(behind_nat), _now(),
                 role))
            gw_id = cur.lastrowid
            assert gw_id is not None
            self._set_ports(cur, ent_id, gw_id, lan)
            self._bump(cur, ent_id)
            self._check_render(cur, ent_id)
            return self._gateway(cur, gw_id)

    def update_gateway(self, name: str, *, serial: Any = UNSET, uplinks: Any = UNSET, ports: Any = UNSET,
                       behind_nat: Any = UNSET, activation_code: Any = UNSET) -> GatewayRec:
        """Change the given fields (activation_code=None removes the code). Name and system IP stay."""
        with self._tx(write=True) as cur:
            gw_id, ent_id = self._gateway_id(cur, name)
            old = self._gateway(cur, gw_id)
            if serial is not UNSET and _serial(serial) != old.serial:
                self._taken(cur, "SELECT 1 FROM gateways WHERE serial = ?", (serial,), "serial",
                            f"a gateway with serial number {serial!r}")
                cur.execute("UPDATE gateways SET serial = ? WHERE id = ?", (serial, gw_id))
                self._revoke_device(cur, old.serial, "gateway replaced (new serial)")
                if cur.execute("SELECT ipsec FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0] is not None:
                    self._bump(cur, ent_id)  # its peers bind it to its serial (ipsec auth "ldevid")
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
                self._set_ports(cur, ent_id, gw_id, lan)
                self._bump(cur, ent_id)
                self._check_render(cur, ent_id)
            return self._gateway(cur, gw_id)

    def get_gateway(self, name: str) -> GatewayRec:
        with self._tx() as cur:
            return self._gateway(cur, self._gateway_id(cur, name)[0])

    def list_gateways(self, enterprise: str) -> list[GatewayRec]:
        with self._tx() as cur:
            ent_id = self._enterprise_id(cur, enterprise)
            ids = [r[0] for r in cur.execute("SELECT id FROM gateways WHERE enterprise_id = ? ORDER BY name",
                                             (ent_id,))]
            return [self._gateway(cur, i) for i in ids]

    def delete_gateway(self, name: str) -> None:
        """Its system IP becomes free, but the pool hands out the others first."""
        with self._tx(write=True) as cur:
            gw_id, ent_id = self._gateway_id(cur, name)
            serial = self._gateway(cur, gw_id).serial
            cur.execute("DELETE FROM gateways WHERE id = ?", (gw_id,))
            self._bump(cur, ent_id)
            self._revoke_device(cur, serial, "gateway deleted")  # its tunnels are refused everywhere

    def gateway_by_serial(self, serial: str) -> GatewayRec | None:
        with self._tx() as cur:
            row = cur.execute("SELECT id FROM gateways WHERE serial = ?", (serial,)).fetchone()
            return self._gateway(cur, row[0]) if row is not None else None

    def check_activation(self, serial: str, code: str | None) -> bool:
        """Does ``code`` activate the gateway with this serial? True also when it needs no code."""
        with self._tx() as cur:
            row = cur.execute("SELECT activation_hash FROM gateways WHERE serial = ?", (serial,)).fetchone()
        if row is not None and row[0] is None:
            return True
        # An unknown serial costs a guess as much as a known one, so timing does not tell them apart.
        stored = row[0] if row is not None else _dummy_hash()
        return verify_activation_code(stored, code or "") and row is not None and code is not None

    def _gateway(self, cur: sqlite3.Cursor, gw_id: int) -> GatewayRec:
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

    @staticmethod
    def _set_ports(cur: sqlite3.Cursor, ent_id: int, gw_id: int, lan: Mapping[str, Sequence[str]]) -> None:
        for subnet, ifaces in lan.items():
            row = cur.execute("SELECT id FROM subnets WHERE enterprise_id = ? AND name = ?",
                              (ent_id, subnet)).fetchone()
            if row is None:
                raise StoreError(f"ports.{subnet}", f"the enterprise has no subnet named {subnet!r}")
            cur.executemany("INSERT INTO gateway_ports VALUES (?, ?, ?)", [(gw_id, row[0], i) for i in ifaces])

    def _allocate(self, cur: sqlite3.Cursor) -> IPv4Address:
        """The next free host of the pool after the last one handed out (wrapping around), so a
        deleted gateway's system IP goes back into use as late as possible. Network, broadcast
        and the controller's own address are never handed out."""
        first = int(self.system_pool.network_address) + 1
        last = int(self.controller_ip) - 1
        size = last - first + 1
        taken = {int(IPv4Address(r[0])) for r in cur.execute("SELECT system_ip FROM gateways")}
        start = int(self._setting(cur, "next_system_ip") or first)
        if not first <= start <= last:
            start = first
        for i in range(size):
            candidate = first + (start - first + i) % size
            if candidate not in taken:
                self._set(cur, "next_system_ip", str(first + (candidate + 1 - first) % size))
                return IPv4Address(candidate)
        raise Conflict("system_ip", f"the system IP pool {self.system_pool} is exhausted")

    # -- policy --------------------------------------------------------------------------------------

    def _set_doc(self, enterprise: str, column: str, adapter: TypeAdapter, doc: Any) -> Any:
        """Replace one of the enterprise's documents (policy, qos; None removes it). Refused, naming the
        field, if it does not validate or leaves any gateway's config invalid; then nothing changes."""
        value = None if doc is None else _validated(adapter, doc if isinstance(doc, Mapping) else
                                                    doc.model_dump(mode="json"), column)
        with self._tx(write=True) as cur:
            ent_id = self._enterprise_id(cur, enterprise)
            old = cur.execute(f"SELECT {column} FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0]
            new = None if value is None else value.model_dump_json()
            if new != old:
                cur.execute(f"UPDATE enterprises SET {column} = ? WHERE id = ?", (new, ent_id))
                self._bump(cur, ent_id)
                self._check_render(cur, ent_id)
        return value

    def _get_doc(self, enterprise: str, column: str, model: Any) -> Any:
        with self._tx() as cur:
            ent_id = self._enterprise_id(cur, enterprise)
            doc = cur.execute(f"SELECT {column} FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0]
        return None if doc is None else model.model_validate_json(doc)

    def set_policy(self, enterprise: str, policy: PolicyConfig | Mapping[str, Any] | None) -> PolicyConfig | None:
        """The enterprise's firewall policy (None: no firewall)."""
        return self._set_doc(enterprise, "policy", _POLICY, policy)

    def get_policy(self, enterprise: str) -> PolicyConfig | None:
        return self._get_doc(enterprise, "policy", PolicyConfig)

    def set_qos(self, enterprise: str, qos: QosConfig | Mapping[str, Any] | None) -> QosConfig | None:
        """The enterprise's QoS profile (None: no shaping); rates come from each gateway's uplinks."""
        return self._set_doc(enterprise, "qos", _QOS, qos)

    def get_qos(self, enterprise: str) -> QosConfig | None:
        return self._get_doc(enterprise, "qos", QosConfig)

    # -- rendering ---------------------------------------------------------------------------------

    def _model(self, cur: sqlite3.Cursor, ent_id: int) -> Enterprise:
        ent = self._enterprise(cur, cur.execute("SELECT name FROM enterprises WHERE id = ?",
                                                (ent_id,)).fetchone()[0])
        subnets = [SubnetDef(name=n, vni=v, cidr=c, gateway=g) for n, v, c, g in cur.execute(
            "SELECT name, vni, cidr, gateway FROM subnets WHERE enterprise_id = ? ORDER BY vni", (ent_id,))]
        ids = [r[0] for r in cur.execute("SELECT id FROM gateways WHERE enterprise_id = ? ORDER BY name", (ent_id,))]
        gateways = []
        for gw_id in ids:
            g = self._gateway(cur, gw_id)
            gateways.append(GatewayDef(name=g.name, system_ip=g.system_ip, serial=g.serial, uplinks=g.uplinks,
                                       ports=g.ports,
                                       behind_nat=g.behind_nat, role=g.role,  # type: ignore[arg-type]
                                       apps=self._apps(cur, gw_id), vms=self._vms(cur, gw_id)))
        policy, qos = cur.execute("SELECT policy, qos FROM enterprises WHERE id = ?", (ent_id,)).fetchone()
        return Enterprise(name=ent.name, generation=ent.generation, transport=ent.transport, ipsec=ent.ipsec,
                          crl=self._crl(cur),
                          subnets=tuple(subnets), gateways=tuple(gateways), image_base=self._setting(cur, "device_url"),
                          policy=None if policy is None else PolicyConfig.model_validate_json(policy),
                          qos=None if qos is None else QosConfig.model_validate_json(qos))

    def _check_render(self, cur: sqlite3.Cursor, ent_id: int) -> None:
        """The safety net under the checks above: a write that would leave a gateway without a
        valid config is refused (and rolled back) rather than discovered when it connects."""
        try:
            render(self._model(cur, ent_id))
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise StoreError(next((f for f in ("policy", "qos") if msg.startswith(f)), "enterprise"),
                             f"the change leaves it invalid: {msg}") from None
        except ConfigError as exc:
            problems = "; ".join(exc.problems)
            first = exc.problems[0].removeprefix("(document): ") if exc.problems else ""
            field = next((f for f in ("policy", "qos") if first.startswith(f)), "config")
            raise StoreError(field,
                             f"the change leaves {exc.source} invalid: {problems}") from None

    def enterprise_model(self, name: str) -> Enterprise:
        """The enterprise as ``controller.mesh`` takes it."""
        with self._tx() as cur:
            return self._model(cur, self._enterprise_id(cur, name))

    def config_for(self, gateway: str) -> GatewayConfig:
        """The gateway's full config (full mesh, the enterprise's generation), validated by nsg.model."""
        with self._tx() as cur:
            _, ent_id = self._gateway_id(cur, gateway)
            ent = self._model(cur, ent_id)
        return render(ent)[gateway]

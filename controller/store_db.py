"""The controller's database: one SQLite file, its schema and migrations, and transactions.

The store's parts (controller/store.py composes them) own their tables' rows; this module owns the
connection, every table's definition, the migrations that make an old file current, and ``tx``, the
one way in. One connection, guarded by a lock, serves the process; WAL lets ``nsg-controller token
create`` write to the file while a server has it open. The file is created 0600: an enterprise
that chose PSKs keeps its secret in it.

Every table is defined here, in the order the migrations made them, because the on-disk schema is one
contract with every existing database: a migration, once released, never changes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from controller.inputs import Conflict, StoreError, _now

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
    5: (  # LDevIDs issued and revoked (controller/store_certs.py); the continuation line keeps the
        # indentation it was released with: SQLite stores the statement's text as written
        """CREATE TABLE certificates (cert_serial TEXT PRIMARY KEY, device_serial TEXT NOT NULL,
        not_after TEXT NOT NULL, issued TEXT NOT NULL, revoked TEXT, reason TEXT)""",
        "CREATE INDEX certificates_by_device ON certificates (device_serial)",
    ),
    6: (  # a subnet's LAN port security (PortSecurity JSON); NULL: the default limits, 'off': none
        "ALTER TABLE subnets ADD COLUMN port_security TEXT",
    ),
    7: (  # signed upgrade bundles an enterprise uploaded (the bytes live in the device site's bundle
        # directory; the manifest's fields as the controller verified them) and the upgrade profiles
        # (UpgradeProfile JSON) of enterprises and, overriding them, of gateways (controller/store_upgrades.py)
        """CREATE TABLE bundles (id INTEGER PRIMARY KEY,
            enterprise_id INTEGER NOT NULL REFERENCES enterprises(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL, size INTEGER NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
            min_version TEXT NOT NULL, build TEXT NOT NULL, key_id TEXT NOT NULL, created TEXT NOT NULL,
            UNIQUE (enterprise_id, sha256), UNIQUE (enterprise_id, model, version))""",
        "ALTER TABLE enterprises ADD COLUMN upgrade TEXT",
        "ALTER TABLE gateways ADD COLUMN upgrade TEXT",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)


class Database:
    """The open file (created 0600, WAL, migrated on open); ``tx`` is the only way to its rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
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
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def tx(self, *, write: bool = False) -> Iterator[sqlite3.Cursor]:
        """One transaction; IMMEDIATE for writes, so checks and inserts see the same state. Whatever
        raises inside rolls the whole of it back (the store's checks rely on that)."""
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
        with self.tx() as cur:
            return cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]

    def _migrate(self) -> None:
        with self.tx(write=True) as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied TEXT)")
            have = cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            if have > SCHEMA_VERSION:
                raise StoreError("schema", f"database schema {have} is newer than this controller's {SCHEMA_VERSION}")
            for version in sorted(v for v in MIGRATIONS if v > have):
                for statement in MIGRATIONS[version]:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, _now()))


# -- helpers for the store's parts, each inside a transaction of theirs ----------------------------

# Documents.check_render (controller/store_documents.py), handed to every part whose writes reach configs:
# (cursor, enterprise id) -> None, or StoreError naming the field; the caller's transaction rolls back.
RenderCheck = Callable[[sqlite3.Cursor, int], None]



def setting(cur: sqlite3.Cursor, key: str) -> str | None:
    """One row of the settings table (system_pool, next_system_ip, device_url, crl_pem)."""
    row = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def put_setting(cur: sqlite3.Cursor, key: str, value: str) -> None:
    cur.execute("INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value))


def taken(cur: sqlite3.Cursor, sql: str, args: tuple[object, ...], field: str, what: str) -> None:
    """Refuse a duplicate (Conflict naming ``field``) if ``sql`` finds a row."""
    if cur.execute(sql, args).fetchone() is not None:
        raise Conflict(field, f"{what} already exists")

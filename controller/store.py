"""The controller's store: its state in one SQLite file, reached by responsibility.

    store = Store("controller.db")
    store.enterprises.create("acme", transport="esp")     # enterprises and subnets
    store.gateways.add("acme", "b1", serial=..., uplinks=...)
    store.documents.config_for("b1")                       # policy, QoS, the rendered configs
    store.workloads.add_app("b1", "web", subnet=..., image=...)

Each part is a small class over the one ``Database`` (controller/store_db.py: connection, schema,
migrations, transactions), made here and handed what it uses, no more:

    enterprises   controller/store_enterprises.py  enterprises, subnets, generations
    gateways      controller/store_gateways.py     gateways, activation, identity reset
    ipam          controller/store_ipam.py         the system IP pool, app and VM addresses
    documents     controller/store_documents.py    policy and QoS; enterprise model, per-gateway configs
    workloads     controller/store_workloads.py    image tarballs, apps, VMs
    upgrades      controller/store_upgrades.py     upgrade bundles, upgrade profiles
    tokens        controller/store_tokens.py       admin API tokens
    certificates  controller/store_certs.py        issued LDevIDs, revocation, the CRL

Everything that enters is validated (names, addresses, uplinks through ``controller.inputs`` and
``nsg.model``), so a store that accepted a write can always render every gateway's config: each write
that changes what gateways see bumps the enterprise's generation and is test-rendered before it commits.
An operation that spans parts runs in one transaction and lives with the part it starts from; each
module's docstring names the ones it holds.

Secrets are kept only as hashes: admin tokens as SHA-256 (they are 256-bit random, so a fast hash
is enough), activation codes as salted scrypt (people choose those, so they need a slow one).
By default (IPsec auth "ldevid") the controller holds no data-plane secret at all; an enterprise
that chose PSKs keeps its secret here as is, and each pair of gateways gets a key derived from it.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from controller.inputs import Conflict, NotFound, StoreError, _pool
from controller.store_certs import Certificates
from controller.store_db import Database
from controller.store_documents import Documents
from controller.store_enterprises import Enterprises
from controller.store_gateways import Gateways
from controller.store_ipam import Ipam
from controller.store_tokens import Tokens
from controller.store_upgrades import Upgrades
from controller.store_workloads import Workloads

__all__ = ["Conflict", "NotFound", "Store", "StoreError"]


class Store:
    """The controller's state in one SQLite file (created 0600, WAL, migrated on open)."""

    def __init__(self, path: str | Path, *, system_pool: IPv4Network | str | None = None):
        requested = None if system_pool is None else _pool(system_pool)
        self.db = Database(path)
        try:
            self.ipam = Ipam(self.db, requested)
        except BaseException:
            self.db.close()
            raise
        self.path = self.db.path
        self.certificates = Certificates(self.db)
        self.documents = Documents(self.db)
        render = self.documents.check_render  # the writers' safety net; it reads all of them
        self.enterprises = Enterprises(self.db, self.ipam, render)
        self.gateways = Gateways(self.db, self.ipam, self.certificates, render)
        self.workloads = Workloads(self.db, self.ipam, render)
        self.upgrades = Upgrades(self.db, render)
        self.tokens = Tokens(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The store's upgrades (``store.upgrades``): signed bundles an enterprise uploaded, and the upgrade
profiles (the release to run) of enterprises and, overriding them, of single gateways. Every write that
reaches configs bumps the enterprise's generation and is test-rendered before it commits.

A bundle's bytes live in the device site's bundle directory by SHA-256 (controller/bundle_store.py), its
manifest's fields (as the controller verified them with its release keys) in the ``bundles`` table: one
bundle per model and version in an enterprise, so a target version names one file per model. A profile
names a version that has at least one bundle in the enterprise; a bundle whose version a profile names
is not deleted. Cross-responsibility lookups live here: ``may_fetch`` (may the gateway with this device
serial download this bundle? Only one of its own enterprise's), ``bundles_in_use`` (what the bundle
directory keeps), and for rendering ``bundles_of`` and ``profile_of`` (controller/store_documents.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from controller.enterprise import BundleDef, UpgradeProfile
from controller.inputs import Conflict, NotFound, StoreError, _now
from controller.store_db import Database, RenderCheck
from controller.store_enterprises import bump, enterprise_id
from controller.store_gateways import gateway_id
from nsg.upgrade.manifest import Version


@dataclass(frozen=True)
class BundleRec:
    enterprise: str
    sha256: str
    size: int
    model: str
    version: str
    min_version: str
    build: str
    key_id: str
    created: str


@dataclass(frozen=True)
class Profiles:
    enterprise: str
    profile: UpgradeProfile | None  # the enterprise's
    gateways: dict[str, UpgradeProfile]  # gateway name -> its own (overrides the enterprise's)


_BUNDLE_COLUMNS = "e.name, b.sha256, b.size, b.model, b.version, b.min_version, b.build, b.key_id, b.created"


def bundles_of(cur: sqlite3.Cursor, ent_id: int) -> tuple[BundleDef, ...]:
    return tuple(BundleDef(sha256=r[0], size=r[1], model=r[2], version=r[3], min_version=r[4]) for r in cur.execute(
        "SELECT sha256, size, model, version, min_version FROM bundles WHERE enterprise_id = ? ORDER BY id",
        (ent_id,)))


def profile_of(column: str | None) -> UpgradeProfile | None:
    return None if column is None else UpgradeProfile.model_validate_json(column)


class Upgrades:
    """Bundles and upgrade profiles. Uses the render check."""

    def __init__(self, db: Database, check_render: RenderCheck):
        self._db = db
        self._check_render = check_render

    # -- bundles -----------------------------------------------------------------------------------

    def add_bundle(self, enterprise: str, *, sha256: str, size: int, model: str, version: str, min_version: str,
                   build: str = "", key_id: str = "") -> tuple[BundleRec, bool]:
        """Record a verified bundle (its bytes are already on disk, named by ``sha256``). The same bytes
        twice are one bundle: returns (record, whether it is new). Another file of the same model and
        version is a conflict (delete the first)."""
        bundle = BundleDef(sha256=sha256, size=size, model=model, version=version, min_version=min_version)
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            if cur.execute("SELECT 1 FROM bundles WHERE enterprise_id = ? AND sha256 = ?",
                           (ent_id, sha256)).fetchone() is not None:
                return self._bundle(cur, ent_id, sha256), False
            other = cur.execute("SELECT sha256 FROM bundles WHERE enterprise_id = ? AND model = ? AND version = ?",
                                (ent_id, model, version)).fetchone()
            if other is not None:
                raise Conflict("version", f"a bundle of {model} {version} is uploaded already ({other[0][:16]}...); "
                                          "delete it first")
            cur.execute("INSERT INTO bundles (enterprise_id, sha256, size, model, version, min_version, build, "
                        "key_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (ent_id, bundle.sha256, bundle.size, bundle.model, bundle.version, bundle.min_version,
                         build[:200], key_id[:64], _now()))
            if version in self._targets(cur, ent_id):  # a new model for a version gateways are told to run
                bump(cur, ent_id)
                self._check_render(cur, ent_id)
            return self._bundle(cur, ent_id, sha256), True

    @staticmethod
    def _bundle(cur: sqlite3.Cursor, ent_id: int, sha256: str) -> BundleRec:
        row = cur.execute(f"SELECT {_BUNDLE_COLUMNS} FROM bundles b JOIN enterprises e ON e.id = b.enterprise_id "
                          "WHERE b.enterprise_id = ? AND b.sha256 = ?", (ent_id, sha256)).fetchone()
        if row is None:
            raise NotFound("sha256", f"no bundle {sha256[:16]}... in this enterprise")
        return BundleRec(*row)

    def list_bundles(self, enterprise: str) -> list[BundleRec]:
        with self._db.tx() as cur:
            ent_id = enterprise_id(cur, enterprise)
            rows = cur.execute(f"SELECT {_BUNDLE_COLUMNS} FROM bundles b JOIN enterprises e ON e.id = b.enterprise_id"
                               " WHERE b.enterprise_id = ?", (ent_id,)).fetchall()
        return sorted((BundleRec(*r) for r in rows), key=lambda b: (b.model, Version(b.version)))

    def delete_bundle(self, enterprise: str, sha256: str) -> None:
        """Refused while an upgrade profile of the enterprise names its version."""
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            b = self._bundle(cur, ent_id, sha256)
            users = self._targets(cur, ent_id).get(b.version)
            if users:
                raise Conflict("sha256", f"bundle {b.model} {b.version} is the upgrade target of "
                                         f"{', '.join(sorted(users))}; change or clear the profile first")
            cur.execute("DELETE FROM bundles WHERE enterprise_id = ? AND sha256 = ?", (ent_id, sha256))

    def bundles_in_use(self) -> set[str]:
        """Every bundle hash some row still names (what the bundle directory must keep)."""
        with self._db.tx() as cur:
            return {r[0] for r in cur.execute("SELECT sha256 FROM bundles")}

    def may_fetch(self, serial: str, sha256: str) -> bool:
        """May the gateway with this device serial download this bundle? Only one of its enterprise's."""
        with self._db.tx() as cur:
            return cur.execute("SELECT 1 FROM gateways g JOIN bundles b ON b.enterprise_id = g.enterprise_id "
                               "WHERE g.serial = ? AND b.sha256 = ?", (serial, sha256)).fetchone() is not None

    # -- profiles ----------------------------------------------------------------------------------

    @staticmethod
    def _targets(cur: sqlite3.Cursor, ent_id: int) -> dict[str, set[str]]:
        """version -> who targets it ("enterprise X", "gateway G")."""
        out: dict[str, set[str]] = {}
        row = cur.execute("SELECT name, upgrade FROM enterprises WHERE id = ?", (ent_id,)).fetchone()
        if row[1] is not None:
            out.setdefault(profile_of(row[1]).version, set()).add(f"enterprise {row[0]}")  # type: ignore[union-attr]
        for name, column in cur.execute("SELECT name, upgrade FROM gateways WHERE enterprise_id = ? AND upgrade IS "
                                        "NOT NULL", (ent_id,)):
            out.setdefault(profile_of(column).version, set()).add(f"gateway {name}")  # type: ignore[union-attr]
        return out

    def set_profile(self, enterprise: str, version: str, *, gateway: str | None = None,
                    commit_after_s: float | None = None, retry: bool = False) -> UpgradeProfile:
        """The release the enterprise's gateways (or ``gateway`` alone) should run. ``retry``: give every box
        under this profile one more try of the version, even where it failed before. The version must have
        an uploaded bundle in the enterprise."""
        with self._db.tx(write=True) as cur:
            if gateway is None:
                ent_id, gw_id = enterprise_id(cur, enterprise), None
            else:
                gw_id, ent_id = gateway_id(cur, gateway)
                if ent_id != enterprise_id(cur, enterprise):
                    raise StoreError("gateway", f"gateway {gateway!r} is not in enterprise {enterprise!r}")
            try:
                Version(version)
            except (ValueError, TypeError) as exc:
                raise StoreError("version", str(exc)) from None
            models = [r[0] for r in cur.execute("SELECT model FROM bundles WHERE enterprise_id = ? AND version = ?",
                                                (ent_id, version))]
            if not models:
                raise StoreError("version", f"no uploaded bundle of version {version} in this enterprise "
                                            "(nsg-controller bundle upload)")
            old = self._column(cur, ent_id, gw_id)
            before = profile_of(old)
            count = before.retry if before is not None and before.version == version else 0
            try:
                profile = UpgradeProfile(version=version, commit_after_s=commit_after_s, retry=count + int(retry))
            except ValueError as exc:  # pydantic's ValidationError is one: the window out of bounds
                raise StoreError("commit_after_s", "give 5 to 86400 seconds") from exc
            new = profile.model_dump_json()
            if new != old:
                self._write(cur, ent_id, gw_id, new)
            return profile

    def clear_profile(self, enterprise: str, *, gateway: str | None = None) -> None:
        """No upgrade asked for any more (a gateway's own: the enterprise's applies again). A slot a box armed
        already stays armed (nsg/upgrade/agent.py)."""
        with self._db.tx(write=True) as cur:
            if gateway is None:
                ent_id, gw_id = enterprise_id(cur, enterprise), None
            else:
                gw_id, ent_id = gateway_id(cur, gateway)
            if self._column(cur, ent_id, gw_id) is not None:
                self._write(cur, ent_id, gw_id, None)

    @staticmethod
    def _column(cur: sqlite3.Cursor, ent_id: int, gw_id: int | None) -> str | None:
        if gw_id is None:
            return cur.execute("SELECT upgrade FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0]
        return cur.execute("SELECT upgrade FROM gateways WHERE id = ?", (gw_id,)).fetchone()[0]

    def _write(self, cur: sqlite3.Cursor, ent_id: int, gw_id: int | None, column: str | None) -> None:
        if gw_id is None:
            cur.execute("UPDATE enterprises SET upgrade = ? WHERE id = ?", (column, ent_id))
        else:
            cur.execute("UPDATE gateways SET upgrade = ? WHERE id = ?", (column, gw_id))
        bump(cur, ent_id)
        self._check_render(cur, ent_id)

    def profiles(self, enterprise: str) -> Profiles:
        with self._db.tx() as cur:
            ent_id = enterprise_id(cur, enterprise)
            own = cur.execute("SELECT upgrade FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0]
            gws = {n: profile_of(c) for n, c in cur.execute(
                "SELECT name, upgrade FROM gateways WHERE enterprise_id = ? AND upgrade IS NOT NULL ORDER BY name",
                (ent_id,))}
        return Profiles(enterprise, profile_of(own), gws)  # type: ignore[arg-type]

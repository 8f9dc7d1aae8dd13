"""The store's tenant workloads (``store.workloads``): uploaded image tarballs, and apps and VMs per
gateway. Their addresses come from IPAM (controller/store_ipam.py), inside the same transaction; every
write that reaches configs bumps the enterprise's generation and is test-rendered before it commits.

Cross-responsibility operations live here, because each is a question about workloads:
- ``image_in_use``: which tarballs the image directory must keep (controller/image_store.py prunes the rest);
- ``may_fetch``: may the gateway with this device serial download this tarball? Only if one of its apps
  runs it (the device site asks, with the serial of the client certificate);
- ``set_device_url``: where gateways download tarballs (and upgrade bundles) from; it is part of every
  app's config and every upgrade section, so it bumps every enterprise that has apps or an upgrade
  profile. The rendered configs read it with ``image_base``, and a gateway's workloads with ``apps_of``
  and ``vms_of`` (controller/store_documents.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pydantic import TypeAdapter

from controller.enterprise import AppDef, VmDef
from controller.inputs import Conflict, NotFound, StoreError, _now, _validated
from controller.store_db import Database, RenderCheck, put_setting, setting, taken
from controller.store_enterprises import bump, enterprise_id
from controller.store_gateways import gateway_id, gateway_rec
from controller.store_ipam import Ipam
from nsg.model.tenant_workloads import image_reference

_APP = TypeAdapter(AppDef)
_VM = TypeAdapter(VmDef)
APP_FIELDS = ("image", "image_sha256", "command", "env", "memory_mb", "cpus", "pids", "restart")
VM_FIELDS = ("kernel", "initrd", "append", "memory_mb", "cpus", "accel")


@dataclass(frozen=True)
class ImageRec:
    enterprise: str
    sha256: str
    size: int
    references: tuple[str, ...]
    created: str


@dataclass(frozen=True)
class AppRec:
    gateway: str
    app: AppDef
    created: str


@dataclass(frozen=True)
class VmRec:
    gateway: str
    vm: VmDef
    created: str


DEVICE_URL_SETTING = "device_url"


def apps_of(cur: sqlite3.Cursor, gw_id: int) -> tuple[AppDef, ...]:
    """The gateway's apps, by name (as its config lists them)."""
    return tuple(AppDef.model_validate_json(r[0]) for r in cur.execute(
        "SELECT spec FROM apps WHERE gateway_id = ? ORDER BY name", (gw_id,)))


def vms_of(cur: sqlite3.Cursor, gw_id: int) -> tuple[VmDef, ...]:
    """The gateway's VMs, by name (as its config lists them)."""
    return tuple(VmDef.model_validate_json(r[0]) for r in cur.execute(
        "SELECT spec FROM vms WHERE gateway_id = ? ORDER BY name", (gw_id,)))


def image_base(cur: sqlite3.Cursor) -> str | None:
    """The device site's URL that image URLs in configs are made from (None until the device services set it)."""
    return setting(cur, DEVICE_URL_SETTING)


class Workloads:
    """Images, apps and VMs. Uses IPAM (their addresses) and the render check."""

    def __init__(self, db: Database, ipam: Ipam, check_render: RenderCheck):
        self._db = db
        self._ipam = ipam
        self._check_render = check_render

    # -- images and apps ---------------------------------------------------------------------------

    def add_image(self, enterprise: str, sha256: str, size: int, references: Sequence[str]) -> tuple[ImageRec, bool]:
        """Record an uploaded tarball (its bytes are already on disk, named by ``sha256``). The same
        bytes twice are one image: returns (record, whether it is new)."""
        if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise StoreError("sha256", "must be 64 lowercase hex digits")
        refs = tuple(sorted(set(references)))
        if not refs:
            raise StoreError("image", "the tarball tags no image (docker save NAME:TAG makes a tagged one)")
        for i, r in enumerate(refs):
            try:
                image_reference(r)
            except ValueError as exc:
                raise StoreError(f"references[{i}]", str(exc)) from None
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            row = cur.execute("SELECT 1 FROM images WHERE enterprise_id = ? AND sha256 = ?",
                              (ent_id, sha256)).fetchone()
            if row is None:
                cur.execute("INSERT INTO images (enterprise_id, sha256, size, refs, created) VALUES (?, ?, ?, ?, ?)",
                            (ent_id, sha256, int(size), json.dumps(refs), _now()))
            return self._image(cur, ent_id, sha256), row is None

    @staticmethod
    def _image(cur: sqlite3.Cursor, ent_id: int, sha256: str) -> ImageRec:
        row = cur.execute("SELECT e.name, i.sha256, i.size, i.refs, i.created FROM images i "
                          "JOIN enterprises e ON e.id = i.enterprise_id WHERE i.enterprise_id = ? AND i.sha256 = ?",
                          (ent_id, sha256)).fetchone()
        if row is None:
            raise NotFound("sha256", f"no image {sha256[:16]}... in this enterprise")
        return ImageRec(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4])

    def list_images(self, enterprise: str) -> list[ImageRec]:
        with self._db.tx() as cur:
            ent_id = enterprise_id(cur, enterprise)
            shas = [r[0] for r in cur.execute("SELECT sha256 FROM images WHERE enterprise_id = ? ORDER BY id",
                                              (ent_id,))]
            return [self._image(cur, ent_id, h) for h in shas]

    def delete_image(self, enterprise: str, sha256: str) -> None:
        """Refused while an app of the enterprise runs it."""
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            self._image(cur, ent_id, sha256)
            users = sorted(f"{g}/{a.name}" for g, a in self._enterprise_apps(cur, ent_id) if a.image_sha256 == sha256)
            if users:
                raise Conflict("sha256", f"image {sha256[:16]}... is in use by apps: {', '.join(users)}")
            cur.execute("DELETE FROM images WHERE enterprise_id = ? AND sha256 = ?", (ent_id, sha256))

    def image_in_use(self) -> set[str]:
        """Every image hash some row still names (what the image directory must keep)."""
        with self._db.tx() as cur:
            return {r[0] for r in cur.execute("SELECT sha256 FROM images")}

    def may_fetch(self, serial: str, sha256: str) -> bool:
        """Does the gateway with this serial run an app from this image? Only then may it download it."""
        with self._db.tx() as cur:
            row = cur.execute("SELECT id FROM gateways WHERE serial = ?", (serial,)).fetchone()
            return row is not None and any(a.image_sha256 == sha256 for a in apps_of(cur, row[0]))

    def set_device_url(self, url: str) -> None:
        """Where gateways reach the device site (image URLs in their configs are made from it)."""
        with self._db.tx(write=True) as cur:
            if image_base(cur) != url:
                put_setting(cur, DEVICE_URL_SETTING, url)
                cur.execute("UPDATE enterprises SET generation = generation + 1 WHERE id IN "
                            "(SELECT DISTINCT g.enterprise_id FROM apps a JOIN gateways g ON g.id = a.gateway_id) "
                            "OR upgrade IS NOT NULL OR id IN (SELECT enterprise_id FROM gateways WHERE upgrade IS "
                            "NOT NULL)")  # app images and upgrade bundles are fetched from it

    @staticmethod
    def _enterprise_apps(cur: sqlite3.Cursor, ent_id: int) -> list[tuple[str, AppDef]]:
        return [(g, AppDef.model_validate_json(spec)) for g, spec in cur.execute(
            "SELECT g.name, a.spec FROM apps a JOIN gateways g ON g.id = a.gateway_id "
            "WHERE g.enterprise_id = ? ORDER BY g.name, a.name", (ent_id,))]

    def _resolve_image(self, cur: sqlite3.Cursor, ent_id: int, ref: str, sha256: str | None) -> str:
        """The uploaded tarball an app runs: the one named, or the newest that tags ``ref``."""
        if sha256 is not None:
            img = self._image(cur, ent_id, sha256)
            if ref not in img.references:
                raise StoreError("image", f"image {sha256[:16]}... tags {', '.join(img.references)}, not {ref}")
            return sha256
        for h, refs in cur.execute("SELECT sha256, refs FROM images WHERE enterprise_id = ? ORDER BY id DESC",
                                   (ent_id,)):
            if ref in json.loads(refs):
                return h
        raise StoreError("image", f"no uploaded image tags {ref}; upload its `docker save` tarball first")

    def _workload_home(self, cur: sqlite3.Cursor, table: str, gateway: str, name: str,
                       subnet: str) -> tuple[int, int, tuple]:
        """For a new app or VM (``table``): its edge gateway's and enterprise's ids and its subnet's row
        (id, cidr, gateway), once the name is free on that gateway."""
        what = {"apps": "app", "vms": "VM"}[table]
        gw_id, ent_id = gateway_id(cur, gateway)
        if gateway_rec(cur, gw_id).role == "hub":
            raise StoreError("gateway", f"{gateway} is a hub; {what}s run on edge gateways")
        row = cur.execute("SELECT id, cidr, gateway FROM subnets WHERE enterprise_id = ? AND name = ?",
                          (ent_id, subnet)).fetchone()
        if row is None:
            raise StoreError("subnet", f"the enterprise has no subnet named {subnet!r}")
        taken(cur, f"SELECT 1 FROM {table} WHERE gateway_id = ? AND name = ?", (gw_id, name), "name",
              f"{what} {name!r} on {gateway}")
        return gw_id, ent_id, row

    def add_app(self, gateway: str, name: str, *, subnet: str, image: str, address: object = None,
                image_sha256: str | None = None, **spec: Any) -> AppRec:
        """A tenant app on ``gateway``; without ``address`` the controller's IPAM picks one."""
        unknown = set(spec) - set(APP_FIELDS)
        if unknown:
            raise StoreError(sorted(unknown)[0], "not an app setting")
        with self._db.tx(write=True) as cur:
            gw_id, ent_id, row = self._workload_home(cur, "apps", gateway, name, subnet)
            _validated(_APP, {"name": name, "image": image, "subnet": subnet, "address": "0.0.0.0"}, "")
            sha = self._resolve_image(cur, ent_id, image, image_sha256)
            ip = self._ipam.workload_address(cur, row[0], IPv4Network(row[1]), IPv4Address(row[2]), address)
            app: AppDef = _validated(_APP, {**spec, "name": name, "subnet": subnet, "image": image,
                                            "address": str(ip), "image_sha256": sha}, "")
            cur.execute("INSERT INTO apps (gateway_id, subnet_id, name, address, spec, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (gw_id, row[0], name, str(ip), app.model_dump_json(), _now()))
            bump(cur, ent_id)
            self._check_render(cur, ent_id)
            return self._app(cur, gw_id, name)

    def update_app(self, gateway: str, name: str, **changes: Any) -> AppRec:
        """Change an app's image (a new version), command, environment, limits or restart policy."""
        unknown = set(changes) - set(APP_FIELDS)
        if unknown:
            raise StoreError(sorted(unknown)[0], "cannot be changed (remove the app and add it again)")
        with self._db.tx(write=True) as cur:
            gw_id, ent_id = gateway_id(cur, gateway)
            old = self._app(cur, gw_id, name).app
            doc = {**old.model_dump(mode="json", exclude={"image_source"}), **changes}
            if "image" in changes and "image_sha256" not in changes:
                doc["image_sha256"] = None  # a new reference: the newest tarball that tags it
            doc["image_sha256"] = self._resolve_image(cur, ent_id, doc["image"], doc["image_sha256"])
            app: AppDef = _validated(_APP, doc, "")
            if app != old:
                cur.execute("UPDATE apps SET spec = ? WHERE gateway_id = ? AND name = ?",
                            (app.model_dump_json(), gw_id, name))
                bump(cur, ent_id)
                self._check_render(cur, ent_id)
            return self._app(cur, gw_id, name)

    @staticmethod
    def _app(cur: sqlite3.Cursor, gw_id: int, name: str) -> AppRec:
        row = cur.execute("SELECT g.name, a.spec, a.created FROM apps a JOIN gateways g ON g.id = a.gateway_id "
                          "WHERE a.gateway_id = ? AND a.name = ?", (gw_id, name)).fetchone()
        if row is None:
            raise NotFound("app", f"no app named {name!r} on this gateway")
        return AppRec(row[0], AppDef.model_validate_json(row[1]), row[2])

    def get_app(self, gateway: str, name: str) -> AppRec:
        with self._db.tx() as cur:
            return self._app(cur, gateway_id(cur, gateway)[0], name)

    def list_apps(self, gateway: str) -> list[AppRec]:
        with self._db.tx() as cur:
            gw_id, _ = gateway_id(cur, gateway)
            names = [r[0] for r in cur.execute("SELECT name FROM apps WHERE gateway_id = ? ORDER BY name", (gw_id,))]
            return [self._app(cur, gw_id, n) for n in names]

    def delete_app(self, gateway: str, name: str) -> None:
        """The gateway removes its container at the next generation; the address goes back to IPAM."""
        with self._db.tx(write=True) as cur:
            gw_id, ent_id = gateway_id(cur, gateway)
            if cur.execute("DELETE FROM apps WHERE gateway_id = ? AND name = ?", (gw_id, name)).rowcount == 0:
                raise NotFound("app", f"no app named {name!r} on {gateway}")
            bump(cur, ent_id)

    def add_vm(self, gateway: str, name: str, *, subnet: str, kernel: Any, address: object = None,
               **spec: Any) -> VmRec:
        """A tenant VM on ``gateway`` (kernel/initrd: files on the gateway); without ``address`` IPAM picks one."""
        unknown = set(spec) - set(VM_FIELDS)
        if unknown:
            raise StoreError(sorted(unknown)[0], "not a VM setting")
        with self._db.tx(write=True) as cur:
            gw_id, ent_id, row = self._workload_home(cur, "vms", gateway, name, subnet)
            ip = self._ipam.workload_address(cur, row[0], IPv4Network(row[1]), IPv4Address(row[2]), address)
            vm: VmDef = _validated(_VM, {**spec, "name": name, "subnet": subnet, "kernel": kernel,
                                         "address": str(ip)}, "")
            cur.execute("INSERT INTO vms (gateway_id, subnet_id, name, address, spec, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (gw_id, row[0], name, str(ip), vm.model_dump_json(), _now()))
            bump(cur, ent_id)
            self._check_render(cur, ent_id)
            return self._vm(cur, gw_id, name)

    @staticmethod
    def _vm(cur: sqlite3.Cursor, gw_id: int, name: str) -> VmRec:
        row = cur.execute("SELECT g.name, v.spec, v.created FROM vms v JOIN gateways g ON g.id = v.gateway_id "
                          "WHERE v.gateway_id = ? AND v.name = ?", (gw_id, name)).fetchone()
        if row is None:
            raise NotFound("vm", f"no VM named {name!r} on this gateway")
        return VmRec(row[0], VmDef.model_validate_json(row[1]), row[2])

    def list_vms(self, gateway: str) -> list[VmRec]:
        with self._db.tx() as cur:
            gw_id, _ = gateway_id(cur, gateway)
            names = [r[0] for r in cur.execute("SELECT name FROM vms WHERE gateway_id = ? ORDER BY name", (gw_id,))]
            return [self._vm(cur, gw_id, n) for n in names]

    def delete_vm(self, gateway: str, name: str) -> None:
        with self._db.tx(write=True) as cur:
            gw_id, ent_id = gateway_id(cur, gateway)
            if cur.execute("DELETE FROM vms WHERE gateway_id = ? AND name = ?", (gw_id, name)).rowcount == 0:
                raise NotFound("vm", f"no VM named {name!r} on {gateway}")
            bump(cur, ent_id)

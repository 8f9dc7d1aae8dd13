"""The admin API's upgrades (docs/upgrades.md): signed bundles an enterprise uploads (verified with the
release keys the controller was given, `serve --release-keys DIR`, then served to that enterprise's
gateways on the device site), the upgrade profile of an enterprise and of single gateways (the release
to run; rendered into each gateway's config by controller/mesh.py), and what every gateway last reported
about its slots and attempts (the channel's "upgrade" events, kept by controller/channel_server.py).
Routed by controller/api.py's table; authenticated like every other route."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller import bundle_store
from controller.api_http import API, BUNDLES, HUB, RELEASE_KEYS, STORE, ApiError, Route, answer, check_media, read_body
from controller.enterprise import UpgradeProfile
from controller.store import StoreError
from controller.store_upgrades import BundleRec
from nsg.model.upgrade import UpgradeState


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class BundleOut(_Out):
    enterprise: str
    sha256: str = Field(description="of the bundle file: what gateways fetch from the device site")
    size: int
    model: str = Field(description="the hardware it is for (its manifest's model)")
    version: str
    min_version: str = Field(description="the oldest release it installs over")
    build: str
    key_id: str = Field(description="the release key that verified it")
    created: str


class BundleList(_Out):
    bundles: list[BundleOut]


class UpgradeProfileIn(_In):
    version: str = Field(max_length=64, description="the release to run; an uploaded bundle must have it")
    commit_after_s: float | None = Field(default=None, ge=5, le=86400, description=(
        "how long a box's new slot has to become healthy before it falls back (default: the box's, 300 s)"))
    retry: bool = Field(default=False, description=(
        "one more try of this version on every box where it failed (a failed version is never retried by itself)"))


class UpgradeProfileOut(_Out):
    version: str
    commit_after_s: float | None = None
    retry: int = Field(description="how many times the operator asked for one more try of this version")


class GatewayUpgrade(_Out):
    name: str
    target: str | None = Field(description="the release its profile names (its own, else the enterprise's)")
    source: Literal["gateway", "enterprise"] | None = None
    connected: bool
    reported_at: float | None = Field(default=None, description="when it last reported its upgrade state")
    state: UpgradeState | None = Field(default=None, description="its slots, versions and last attempt")


class UpgradeOut(_Out):
    enterprise: str
    profile: UpgradeProfileOut | None = Field(description="the enterprise's profile")
    gateways: list[GatewayUpgrade]


def _bundle_out(b: BundleRec) -> BundleOut:
    return BundleOut(enterprise=b.enterprise, sha256=b.sha256, size=b.size, model=b.model, version=b.version,
                     min_version=b.min_version, build=b.build, key_id=b.key_id, created=b.created)


def _profile_out(p: UpgradeProfile | None) -> UpgradeProfileOut | None:
    return None if p is None else UpgradeProfileOut(version=p.version, commit_after_s=p.commit_after_s, retry=p.retry)


def _report(request: web.Request, serial: str) -> tuple[float, UpgradeState] | None:
    hub = request.app[HUB]
    return None if hub is None else hub.upgrades.get(serial)


def upgrade_memory(request: web.Request, serial: str) -> dict[str, Any]:
    """The upgrade fields of a gateway's status (controller/api.py gateway_status)."""
    store = request.app[STORE]
    rec = store.gateways.by_serial(serial)
    got = _report(request, serial)
    target = None
    if rec is not None:
        profiles = store.upgrades.profiles(rec.enterprise)
        profile = profiles.gateways.get(rec.name) or profiles.profile
        target = profile.version if profile else None
    return {"upgrade_target": target, "upgrade": got[1] if got else None, "upgrade_at": got[0] if got else None}


# -- handlers ------------------------------------------------------------------------------------


def _bundle_dir(request: web.Request) -> Any:
    where = request.app[BUNDLES]
    if where is None:
        raise ApiError(409, "conflict", "this controller serves no devices (serve --devices), so no bundles", "bundle")
    if request.app[RELEASE_KEYS] is None:
        raise ApiError(409, "conflict", "this controller has no release keys to verify bundles with (serve "
                                        "--release-keys DIR)", "bundle")
    return where


async def list_bundles(request: web.Request) -> web.Response:
    """List an enterprise's upgrade bundles."""
    found = request.app[STORE].upgrades.list_bundles(request.match_info["enterprise"])
    return answer(BundleList(bundles=[_bundle_out(b) for b in found]))


async def upload_bundle(request: web.Request) -> web.Response:
    """Upload a signed upgrade bundle (application/x-tar); kept only if it verifies with the release keys."""
    where = _bundle_dir(request)
    check_media(request, "application/x-tar")
    ent, store = request.match_info["enterprise"], request.app[STORE]
    store.enterprises.get(ent)  # 404 before reading a large body for nothing
    try:
        sha, size, verified = await bundle_store.receive(request.content, where, request.app[RELEASE_KEYS])
    except bundle_store.BundleUploadError as exc:
        raise ApiError(400, "invalid", f"{exc} [{exc.code}]", "bundle") from None
    m = verified.manifest
    try:
        rec, new = store.upgrades.add_bundle(ent, sha256=sha, size=size, model=m.model, version=m.version,
                                             min_version=m.min_version, build=m.build, key_id=verified.key.key_id)
    except StoreError:
        bundle_store.prune(where, store.upgrades.bundles_in_use())  # the bytes no row names go again
        raise
    return answer(_bundle_out(rec), 201 if new else 200, f"{API}/enterprises/{ent}/bundles/{sha}")


async def delete_bundle(request: web.Request) -> web.Response:
    """Delete an upgrade bundle (refused while an upgrade profile names its version)."""
    store = request.app[STORE]
    store.upgrades.delete_bundle(request.match_info["enterprise"], request.match_info["sha256"])
    if request.app[BUNDLES] is not None:
        bundle_store.prune(request.app[BUNDLES], store.upgrades.bundles_in_use())
    return web.Response(status=204)


async def get_upgrade(request: web.Request) -> web.Response:
    """The upgrade profiles of an enterprise and its gateways, and what each gateway last reported."""
    ent, store, hub = request.match_info["enterprise"], request.app[STORE], request.app[HUB]
    profiles = store.upgrades.profiles(ent)
    rows = []
    for g in store.gateways.list(ent):
        own = profiles.gateways.get(g.name)
        profile = own or profiles.profile
        got = _report(request, g.serial)
        rows.append(GatewayUpgrade(
            name=g.name, target=profile.version if profile else None,
            source=None if profile is None else "gateway" if own else "enterprise",
            connected=hub is not None and g.serial in hub.sessions, reported_at=got[0] if got else None,
            state=got[1] if got else None))
    return answer(UpgradeOut(enterprise=ent, profile=_profile_out(profiles.profile), gateways=rows))


async def put_upgrade(request: web.Request) -> web.Response:
    """Set the release an enterprise's gateways should run (those without a profile of their own)."""
    body: UpgradeProfileIn = await read_body(request, UpgradeProfileIn)
    profile = request.app[STORE].upgrades.set_profile(request.match_info["enterprise"], body.version,
                                                      commit_after_s=body.commit_after_s, retry=body.retry)
    return answer(_profile_out(profile))  # type: ignore[arg-type]


async def delete_upgrade(request: web.Request) -> web.Response:
    """Clear an enterprise's upgrade profile (gateways with their own keep theirs)."""
    request.app[STORE].upgrades.clear_profile(request.match_info["enterprise"])
    return web.Response(status=204)


async def put_gateway_upgrade(request: web.Request) -> web.Response:
    """Set the release one gateway should run (overrides its enterprise's profile)."""
    body: UpgradeProfileIn = await read_body(request, UpgradeProfileIn)
    store, name = request.app[STORE], request.match_info["gateway"]
    gw = store.gateways.get(name)
    got = _report(request, gw.serial)
    model = got[1].model if got else None
    if model is not None:  # the box told us what it is: a version with no bundle for it would only be held there
        models = {b.model for b in store.upgrades.list_bundles(gw.enterprise) if b.version == body.version}
        if models and model not in models:
            raise ApiError(400, "invalid", f"gateway {name} is a {model}; no bundle of {body.version} is for it "
                                           f"(uploaded for: {', '.join(sorted(models))})", "version")
    profile = store.upgrades.set_profile(gw.enterprise, body.version, gateway=name,
                                         commit_after_s=body.commit_after_s, retry=body.retry)
    return answer(_profile_out(profile))  # type: ignore[arg-type]


async def delete_gateway_upgrade(request: web.Request) -> web.Response:
    """Clear a gateway's own upgrade profile (its enterprise's applies again)."""
    store, name = request.app[STORE], request.match_info["gateway"]
    store.upgrades.clear_profile(store.gateways.get(name).enterprise, gateway=name)
    return web.Response(status=204)


UPGRADE_ROUTES: tuple[Route, ...] = (
    Route("GET", f"{API}/enterprises/{{enterprise}}/bundles", list_bundles, response=BundleList),
    Route("POST", f"{API}/enterprises/{{enterprise}}/bundles", upload_bundle, response=BundleOut, status=201,
          raw="application/x-tar"),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}/bundles/{{sha256}}", delete_bundle, status=204),
    Route("GET", f"{API}/enterprises/{{enterprise}}/upgrade", get_upgrade, response=UpgradeOut),
    Route("PUT", f"{API}/enterprises/{{enterprise}}/upgrade", put_upgrade, UpgradeProfileIn, UpgradeProfileOut),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}/upgrade", delete_upgrade, status=204),
    Route("PUT", f"{API}/gateways/{{gateway}}/upgrade", put_gateway_upgrade, UpgradeProfileIn, UpgradeProfileOut),
    Route("DELETE", f"{API}/gateways/{{gateway}}/upgrade", delete_gateway_upgrade, status=204),
)

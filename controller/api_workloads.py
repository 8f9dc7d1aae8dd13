"""The admin API's workload routes: a gateway's apps and VMs, and the enterprise's uploaded app images
(the bytes in controller/image_store.py). controller/api.py serves them with the rest (WORKLOAD_ROUTES)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from controller import image_store
from controller.api_http import API, HUB, IMAGES, STORE, ApiError, Route, answer, check_media, read_body
from controller.api_models import (
    AppIn,
    AppList,
    AppLive,
    AppOut,
    AppPatch,
    ImageList,
    ImageOut,
    VmIn,
    VmList,
    VmLive,
    VmOut,
    _app_out,
    _image_out,
    _live_of,
    _vm_out,
)
from controller.store import Store, StoreError


def _store(request: web.Request) -> Store:
    return request.app[STORE]


def _session(request: web.Request, gateway: str):
    hub = request.app[HUB]
    return None if hub is None else hub.sessions.get(_store(request).gateways.get(gateway).serial)


def _live(request: web.Request, gateway: str, prefix: str = "app", model: type[BaseModel] = AppLive) -> dict:
    session = _session(request, gateway)
    return {} if session is None or session.telemetry is None else _live_of(session.telemetry.counters, prefix, model)


async def list_apps(request: web.Request) -> web.Response:
    """List a gateway's apps, each with what the gateway last reported about it."""
    name = request.match_info["gateway"]
    live = _live(request, name)
    return answer(AppList(apps=[_app_out(a, live) for a in _store(request).workloads.list_apps(name)]))


async def add_app(request: web.Request) -> web.Response:
    """Add an app to a gateway (its image from an uploaded tarball; no address: IPAM picks one)."""
    body: AppIn = await read_body(request, AppIn)
    gw = request.match_info["gateway"]
    fields = body.model_dump(exclude_none=True)
    rec = _store(request).workloads.add_app(gw, fields.pop("name"), **fields)
    return answer(_app_out(rec, {}), 201, f"{API}/gateways/{gw}/apps/{rec.app.name}")


async def get_app(request: web.Request) -> web.Response:
    """Show an app and what the gateway last reported about it."""
    gw, name = request.match_info["gateway"], request.match_info["app"]
    return answer(_app_out(_store(request).workloads.get_app(gw, name), _live(request, gw)))


async def update_app(request: web.Request) -> web.Response:
    """Change an app's image, command, environment, limits or restart policy."""
    body: AppPatch = await read_body(request, AppPatch)
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    for k, v in changes.items():
        if v is None and k != "image_sha256":
            raise ApiError(400, "invalid", "may be left out but not null", k)
    gw, name = request.match_info["gateway"], request.match_info["app"]
    return answer(_app_out(_store(request).workloads.update_app(gw, name, **changes), _live(request, gw)))


async def delete_app(request: web.Request) -> web.Response:
    """Remove an app (the gateway removes its container; its address returns to IPAM)."""
    _store(request).workloads.delete_app(request.match_info["gateway"], request.match_info["app"])
    return web.Response(status=204)


async def list_vms(request: web.Request) -> web.Response:
    """List a gateway's VMs, each with what the gateway last reported about it."""
    name = request.match_info["gateway"]
    live = _live(request, name, "vm", VmLive)
    return answer(VmList(vms=[_vm_out(v, live) for v in _store(request).workloads.list_vms(name)]))


async def add_vm(request: web.Request) -> web.Response:
    """Add a VM to a gateway (kernel/initrd are files on the gateway; no address: IPAM picks one)."""
    body: VmIn = await read_body(request, VmIn)
    gw = request.match_info["gateway"]
    fields = body.model_dump(exclude_none=True)
    rec = _store(request).workloads.add_vm(gw, fields.pop("name"), **fields)
    return answer(_vm_out(rec, {}), 201, f"{API}/gateways/{gw}/vms/{rec.vm.name}")


async def delete_vm(request: web.Request) -> web.Response:
    """Remove a VM (the gateway stops it; its address returns to IPAM)."""
    _store(request).workloads.delete_vm(request.match_info["gateway"], request.match_info["vm"])
    return web.Response(status=204)


def _image_dir(request: web.Request) -> Any:
    where = request.app[IMAGES]
    if where is None:
        raise ApiError(409, "conflict", "this controller serves no devices (serve --devices), so no images", "image")
    return where


async def upload_image(request: web.Request) -> web.Response:
    """Upload an app image: the body is a `docker save` tarball (application/x-tar)."""
    where = _image_dir(request)
    check_media(request, "application/x-tar")
    ent = request.match_info["enterprise"]
    _store(request).enterprises.get(ent)  # 404 before reading a large body for nothing
    try:
        sha, size, refs = await image_store.receive(request.content, where)
    except image_store.ImageUploadError as exc:
        raise ApiError(400, "invalid", str(exc), "image") from None
    except RecursionError:  # json.loads of a deeply nested manifest.json: the uploader's fault
        raise ApiError(400, "invalid", "manifest.json is nested too deeply", "image") from None
    try:
        rec, new = _store(request).workloads.add_image(ent, sha, size, refs)
    except StoreError:
        image_store.prune(where, _store(request).workloads.image_in_use())  # the bytes no row names go again
        raise
    return answer(_image_out(rec), 201 if new else 200, f"{API}/enterprises/{ent}/images/{sha}")


async def list_images(request: web.Request) -> web.Response:
    """List an enterprise's uploaded images."""
    found = _store(request).workloads.list_images(request.match_info["enterprise"])
    return answer(ImageList(images=[_image_out(i) for i in found]))


async def delete_image(request: web.Request) -> web.Response:
    """Delete an uploaded image (refused while an app runs it)."""
    _store(request).workloads.delete_image(request.match_info["enterprise"], request.match_info["sha256"])
    where = request.app[IMAGES]
    if where is not None:
        image_store.prune(where, _store(request).workloads.image_in_use())
    return web.Response(status=204)


WORKLOAD_ROUTES: tuple[Route, ...] = (
    Route("GET", f"{API}/gateways/{{gateway}}/apps", list_apps, response=AppList),
    Route("POST", f"{API}/gateways/{{gateway}}/apps", add_app, AppIn, AppOut, 201),
    Route("GET", f"{API}/gateways/{{gateway}}/apps/{{app}}", get_app, response=AppOut),
    Route("PATCH", f"{API}/gateways/{{gateway}}/apps/{{app}}", update_app, AppPatch, AppOut),
    Route("DELETE", f"{API}/gateways/{{gateway}}/apps/{{app}}", delete_app, status=204),
    Route("GET", f"{API}/gateways/{{gateway}}/vms", list_vms, response=VmList),
    Route("POST", f"{API}/gateways/{{gateway}}/vms", add_vm, VmIn, VmOut, 201),
    Route("DELETE", f"{API}/gateways/{{gateway}}/vms/{{vm}}", delete_vm, status=204),
    Route("GET", f"{API}/enterprises/{{enterprise}}/images", list_images, response=ImageList),
    Route("POST", f"{API}/enterprises/{{enterprise}}/images", upload_image, response=ImageOut, status=201,
          raw="application/x-tar"),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}/images/{{sha256}}", delete_image, status=204),
)

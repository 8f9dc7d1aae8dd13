"""Admin API: image uploads, apps (IPAM through the API), and live state from the channel's telemetry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from controller.channel_server import ChannelHub, GatewaySession
from controller.store import Store
from nsg.channel import wire
from tests.unit.controller.test_api import Api, error_of, run, wan


def tarball(tags: list[str] | None = ("acme/web:1",), manifest: bytes | None = None) -> bytes:
    """A tar shaped like `docker save` output (only manifest.json matters to the controller)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        doc = manifest if manifest is not None else json.dumps(
            [{"Config": "c.json", "RepoTags": list(tags or []), "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(doc)
        tar.addfile(info, io.BytesIO(doc))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        yield s


def setup(store: Store) -> None:
    store.workloads.set_device_url("https://198.18.0.2:8444")
    store.enterprises.create("acme")
    store.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
    store.gateways.add("acme", "b1", serial="S1", uplinks=wan(1))


def test_upload_then_app_from_ipam_then_live_state(tmp_path, store):
    setup(store)
    token = store.tokens.create("t")
    hub = ChannelHub(lambda serial: None)
    images = tmp_path / "images"
    body = tarball()
    sha = hashlib.sha256(body).hexdigest()

    async def scenario(client):
        api = Api(client, token)
        hdr = {**api.headers, "Content-Type": "application/x-tar"}
        resp = await client.post("/api/v1/enterprises/acme/images", data=body, headers=hdr)
        assert resp.status == 201
        doc = await resp.json()
        assert (doc["sha256"], doc["size"], doc["references"]) == (sha, len(body), ["acme/web:1"])
        resp = await client.post("/api/v1/enterprises/acme/images", data=body, headers=hdr)
        assert resp.status == 200  # the same bytes again: the same image
        for junk, says in ((b"", "empty"), (b"not a tar at all" * 100, "tar"), (tarball([]), "tags no image"),
                           (tarball(manifest=b"{nope"), "JSON")):
            resp = await client.post("/api/v1/enterprises/acme/images", data=junk, headers=hdr)
            err = (await resp.json())["error"]
            assert (resp.status, err["field"]) == (400, "image") and says in err["message"], err
        resp = await client.post("/api/v1/enterprises/acme/images", data=tarball(["Bad Ref:1"]), headers=hdr)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "references[0]"
        assert sorted(p.name for p in images.iterdir()) == [f"{sha}.tar"]  # no leftovers from refusals

        status, doc = await api("POST", "/gateways/b1/apps", {"name": "web", "subnet": "corp",
                                                               "image": "acme/web:1", "memory_mb": 64})
        assert status == 201 and doc["address"] == "192.0.2.254" and doc["image_sha256"] == sha
        assert doc["live"] is None
        status, doc = await api("POST", "/gateways/b1/apps", {"name": "db", "subnet": "corp",
                                                               "image": "acme/web:1", "memory_mb": 1})
        assert status == 400 and error_of(doc) == ("invalid", "memory_mb")
        status, doc = await api("POST", "/gateways/b1/apps", {"name": "db", "subnet": "corp",
                                                               "image": "acme/web:1", "colour": "red"})
        assert status == 400 and error_of(doc) == ("invalid", "colour")
        status, cfg = await api("GET", "/gateways/b1/config")
        assert cfg["apps"][0]["image_source"] == {"url": f"https://198.18.0.2:8444/images/{sha}", "sha256": sha}

        status, doc = await api("GET", "/gateways/b1/status")
        assert status == 200 and doc["connected"] is False and doc["apps"] == {}
        session = GatewaySession("S1", ws=None)  # type: ignore[arg-type]
        session.telemetry = wire.Telemetry(ts=1.0, counters={
            "app.web.state": "running", "app.web.restarts": 2, "app.web.oom_killed": 1,
            "app.web.memory_mb": 12.5, "app.web.cpu_percent": 3.25, "app.web.error": None,
            "app.web.attached": 1, "app.web.address": "192.0.2.254/24", "app.web.bogus": "ignored", "generation": 3})
        session.results.append(wire.ApplyResult(generation=3, ok=True, running=3))
        hub.sessions["S1"] = session
        status, doc = await api("GET", "/gateways/b1/status")
        assert doc["connected"] and doc["applied_generation"] == 3 and doc["counters"]["generation"] == 3
        assert doc["apps"]["web"] == {"state": "running", "attached": True, "address": "192.0.2.254/24",
                                      "restarts": 2, "oom_killed": True, "memory_mb": 12.5,
                                      "cpu_percent": 3.25, "error": None}
        status, doc = await api("GET", "/gateways/b1/apps/web")
        assert doc["live"]["state"] == "running" and doc["live"]["restarts"] == 2

        status, doc = await api("PATCH", "/gateways/b1/apps/web", {"memory_mb": 128})
        assert status == 200 and doc["memory_mb"] == 128
        status, doc = await api("PATCH", "/gateways/b1/apps/web", {"subnet": "x"})
        assert status == 400 and error_of(doc) == ("invalid", "subnet")
        status, doc = await api("DELETE", f"/enterprises/acme/images/{sha}")
        assert status == 409 and error_of(doc)[1] == "sha256"
        assert (await api("DELETE", "/gateways/b1/apps/web"))[0] == 204
        assert (await api("DELETE", f"/enterprises/acme/images/{sha}"))[0] == 204
        assert list(images.iterdir()) == []
        status, doc = await api("GET", "/enterprises/acme/images")
        assert doc == {"images": []}

    run(store, scenario, hub=hub, images=images)


def test_without_a_device_site_images_are_refused(store):
    setup(store)
    token = store.tokens.create("t")

    async def scenario(client):
        resp = await client.post("/api/v1/enterprises/acme/images", data=tarball(),
                                 headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 409 and (await resp.json())["error"]["field"] == "image"
        status, doc = await Api(client, token)("GET", "/gateways/b1/status")
        assert status == 200 and doc["connected"] is False

    run(store, scenario)


def test_vms_share_ipam_with_apps_and_take_only_files_on_the_gateway(tmp_path, store):
    setup(store)
    token = store.tokens.create("t")
    hub = ChannelHub(lambda serial: None)
    kernel = {"url": "file:///var/lib/nsg/vm/vmlinuz", "sha256": "d" * 64}
    body = tarball()

    async def scenario(client):
        api = Api(client, token)
        hdr = {**api.headers, "Content-Type": "application/x-tar"}
        assert (await client.post("/api/v1/enterprises/acme/images", data=body, headers=hdr)).status == 201
        status, doc = await api("POST", "/gateways/b1/apps", {"name": "web", "subnet": "corp", "image": "acme/web:1"})
        assert doc["address"] == "192.0.2.254"
        status, doc = await api("POST", "/gateways/b1/vms", {"name": "fw", "subnet": "corp", "kernel": kernel,
                                                             "memory_mb": 128, "accel": "tcg"})
        assert status == 201 and doc["address"] == "192.0.2.253" and doc["kernel"] == kernel
        status, doc = await api("POST", "/gateways/b1/vms", {"name": "x", "subnet": "corp", "address": "192.0.2.254",
                                                             "kernel": kernel})
        assert status == 409 and error_of(doc) == ("conflict", "address")  # the app holds it
        status, doc = await api("POST", "/gateways/b1/vms", {"name": "x", "subnet": "corp", "kernel": {
            "url": "https://198.51.100.7/k", "sha256": "d" * 64}})
        assert status == 400 and error_of(doc) == ("invalid", "kernel")
        status, doc = await api("POST", "/gateways/b1/vms", {"name": "x", "subnet": "corp", "kernel": kernel,
                                                             "append": "nsg.ip=1.2.3.4/8"})
        assert status == 400 and error_of(doc) == ("invalid", "append")
        status, cfg = await api("GET", "/gateways/b1/config")
        assert [(v["name"], v["address"], v["accel"]) for v in cfg["vms"]] == [("fw", "192.0.2.253", "tcg")]
        session = GatewaySession("S1", ws=None)  # type: ignore[arg-type]
        session.telemetry = wire.Telemetry(ts=2.0, counters={"vm.fw.state": "running", "vm.fw.attached": 1,
                                                             "vm.fw.restarts": 1, "vm.fw.address": "192.0.2.253/24"})
        hub.sessions["S1"] = session
        status, doc = await api("GET", "/gateways/b1/vms")
        assert doc["vms"][0]["live"] == {"state": "running", "attached": True, "address": "192.0.2.253/24",
                                         "restarts": 1, "error": None}
        status, doc = await api("GET", "/gateways/b1/status")
        assert doc["vms"]["fw"]["state"] == "running"
        status, doc = await api("DELETE", "/enterprises/acme/subnets/corp")
        assert status == 409 and "b1/fw" in doc["error"]["message"]
        assert (await api("DELETE", "/gateways/b1/vms/fw"))[0] == 204
        status, doc = await api("GET", "/gateways/b1/config")
        assert "vms" not in doc or doc["vms"] == []

    run(store, scenario, hub=hub, images=tmp_path / "images")

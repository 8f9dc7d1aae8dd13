"""Issue 13 section 4: the admin API is strict about what it reads. No coercion (true is not 1, "100" is
not 100), JSON only as application/json, hostile bodies (huge numbers, deep nesting) are the client's
400 and never a 500, and VM kernel/initrd sources are absolute, normalised file paths or https."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from controller.store import Store
from nsg.model.tenant_workloads import ImageSource
from tests.unit.controller.test_api import Api, error_of, run, wan

SUBNET = {"name": "dmz", "vni": 200, "cidr": "198.51.100.0/24", "gateway": "198.51.100.1"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        s.enterprises.create("acme")
        s.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
        s.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1))
        yield s


@pytest.fixture
def token(store):
    return store.tokens.create("test")


async def post_raw(client, token: str, path: str, data: bytes, content_type: str | None = "application/json"):
    headers = {"Authorization": f"Bearer {token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    resp = await client.post("/api/v1" + path, data=data, headers=headers)
    text = await resp.text()
    return resp.status, text


def test_no_coercion_of_bools_or_strings_into_numbers(store, token):
    cases = [
        ({**SUBNET, "vni": True}, "vni"),
        ({**SUBNET, "vni": "200"}, "vni"),
        ({**SUBNET, "vni": 200.0}, "vni"),
        ({**SUBNET, "name": 7}, "name"),
    ]

    async def scenario(client):
        api = Api(client, token)
        for body, field in cases:
            status, doc = await api("POST", "/enterprises/acme/subnets", body)
            assert (status, *error_of(doc)) == (400, "invalid", field), (body, doc)
        status, doc = await api("POST", "/enterprises/acme/gateways",
                                {"name": "b2", "serial": "SN2", "uplinks": wan(2), "behind_nat": "yes"})
        assert (status, *error_of(doc)) == (400, "invalid", "behind_nat")
        status, doc = await api("POST", "/enterprises/acme/gateways",
                                {"name": "b2", "serial": "SN2", "uplinks": wan(2, mtu="1400")})
        assert (status, *error_of(doc)) == (400, "invalid", "uplinks[0].mtu")
        # what the documented API and the CLI send still goes: addresses and prefixes as strings
        status, doc = await api("POST", "/enterprises/acme/subnets", SUBNET)
        assert status == 201 and doc["vni"] == 200

    run(store, scenario)
    assert [s.name for s in store.enterprises.list_subnets("acme")] == ["corp", "dmz"]


def test_hostile_json_is_a_400_naming_the_problem_never_a_500(store, token, caplog):
    huge = ("{" + f'"name": "dmz", "vni": {"9" * 5000}, "cidr": "198.51.100.0/24", "gateway": "198.51.100.1"'
            + "}").encode()
    deep = b"[" * 20_000 + b"]" * 20_000
    bodies = [(huge, "number"), (deep, "recursion"), (b'{"name": "acme"', "JSON"), (b"\xff\xfe{}", "JSON")]

    async def scenario(client):
        for body, says in bodies:
            status, text = await post_raw(client, token, "/enterprises/acme/subnets", body)
            doc = json.loads(text)
            assert (status, error_of(doc)) == (400, ("bad_json", None)), (body[:40], doc)
            assert says in doc["error"]["message"], doc
            assert "Traceback" not in text

    run(store, scenario)
    assert "Traceback" not in caplog.text and "failed" not in caplog.text


def test_a_json_body_must_say_application_json(store, token):
    body = json.dumps(SUBNET).encode()

    async def scenario(client):
        for content_type in ("text/plain", None, "application/x-www-form-urlencoded", "application/jsonx"):
            status, text = await post_raw(client, token, "/enterprises/acme/subnets", body, content_type)
            doc = json.loads(text)
            assert (status, error_of(doc)) == (415, ("unsupported_media_type", None)), (content_type, doc)
            assert "application/json" in doc["error"]["message"]
        status, _ = await post_raw(client, token, "/enterprises/acme/subnets", body, "application/json; charset=utf-8")
        assert status == 201

    run(store, scenario)
    assert [s.name for s in store.enterprises.list_subnets("acme")] == ["corp", "dmz"]  # the refused ones wrote nothing


@pytest.mark.parametrize("url", [
    "file:///../../etc/shadow",
    "file:///var/lib/nsg/../../../etc/shadow",
    "file:///var/lib/nsg/./vmlinuz",
    "file:////etc/shadow",
    "file:///var/lib//vmlinuz",
    "file:///var/lib/nsg/vm/",
    "file:///%2e%2e/etc/shadow",
    "file:///var/%2E%2E/etc/shadow",
    "file:///var/lib/x%00y",
    "file://host/var/lib/vmlinuz",
    "file:///var/lib/vmlinuz?x=1",
    "file:///var/lib/vmlinuz#frag",
    "file:/var/lib/vmlinuz",
    "FILE:///var/lib/vmlinuz",
    "http://198.51.100.7/k",
    "ftp://198.51.100.7/k",
    "https:///k",
    "https://198.51.100.7/a/../k",
])
def test_image_sources_are_absolute_normalised_and_file_or_https(url):
    with pytest.raises(ValidationError, match="url"):
        ImageSource(url=url, sha256="d" * 64)


@pytest.mark.parametrize("url", [
    "file:///var/lib/nsg/vm/vmlinuz", "file:///srv/web.tar", "file:///var/lib/nsg/vm/vmlinuz-6.1%2Bdeb",
    "https://198.18.0.2:8444/images/" + "a" * 64, "https://ctl.example/images/x.tar",
])
def test_good_image_sources_still_go(url):
    assert ImageSource(url=url, sha256="d" * 64).url == url


def test_vm_kernel_and_initrd_must_not_climb_out(store, token):
    good = {"url": "file:///var/lib/nsg/vm/vmlinuz", "sha256": "d" * 64}
    bad = {"url": "file:///../../etc/shadow", "sha256": "d" * 64}

    async def scenario(client):
        api = Api(client, token)
        for body, field in (({"kernel": bad}, "kernel.url"), ({"kernel": good, "initrd": bad}, "initrd.url")):
            status, doc = await api("POST", "/gateways/b1/vms", {"name": "vm1", "subnet": "corp", **body})
            assert (status, *error_of(doc)) == (400, "invalid", field), doc
            assert "absolute" in doc["error"]["message"] or ".." in doc["error"]["message"], doc
        status, doc = await api("POST", "/gateways/b1/vms", {"name": "vm1", "subnet": "corp", "kernel": good})
        assert status == 201, doc

    run(store, scenario)
    assert [v.vm.name for v in store.workloads.list_vms("b1")] == ["vm1"]
    # the store refuses it too, whoever calls it
    with pytest.raises(Exception, match=r"kernel"):
        store.workloads.add_vm("b1", "vm2", subnet="corp", kernel=bad)


def test_a_hostile_image_manifest_is_a_400(store, token, tmp_path):
    from tests.unit.controller.test_api_apps import tarball

    images = tmp_path / "images"

    async def scenario(client):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-tar"}
        for manifest in (b"[" * 50_000, b"[" + b"9" * 5000 + b"]"):
            resp = await client.post("/api/v1/enterprises/acme/images", data=tarball(manifest=manifest),
                                     headers=headers)
            doc = await resp.json()
            assert (resp.status, error_of(doc)) == (400, ("invalid", "image")), doc
        resp = await client.post("/api/v1/enterprises/acme/images", data=tarball(),
                                 headers={**headers, "Content-Type": "application/json"})
        assert resp.status == 415 and "application/x-tar" in (await resp.json())["error"]["message"]

    run(store, scenario, images=images)
    assert not images.exists() or list(images.iterdir()) == []

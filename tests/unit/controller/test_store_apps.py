"""controller.store apps and images: IPAM, image resolution, tenant isolation, rendering, refusals."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from controller.store import Conflict, NotFound, Store, StoreError

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def wan(n: int) -> list[dict]:
    return [{"name": "wan0", "interface": "eth0", "mode": "static", "address": f"198.18.{n}.2/24",
             "gateway": f"198.18.{n}.1"}]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        s.workloads.set_device_url("https://198.18.0.2:8444")
        s.enterprises.create("acme")
        s.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/29", gateway="192.0.2.1")
        s.gateways.add("acme", "b1", serial="S1", uplinks=wan(1))
        s.gateways.add("acme", "b2", serial="S2", uplinks=wan(2))
        s.workloads.add_image("acme", SHA_A, 1000, ["acme/web:1"])
        yield s


def test_ipam_hands_out_the_highest_free_hosts_enterprise_wide_and_reuses_freed_ones(store):
    a = store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1").app
    b = store.workloads.add_app("b2", "web", subnet="corp", image="acme/web:1").app  # same name, other gateway
    c = store.workloads.add_app("b1", "api", subnet="corp", image="acme/web:1", address="192.0.2.2").app
    assert (a.address, b.address, c.address) == (IPv4Address("192.0.2.6"), IPv4Address("192.0.2.5"),
                                                 IPv4Address("192.0.2.2"))
    d = store.workloads.add_app("b1", "db", subnet="corp", image="acme/web:1").app
    assert d.address == IPv4Address("192.0.2.4")
    store.workloads.add_app("b1", "x", subnet="corp", image="acme/web:1")  # .3: the last one (.1 is the gateway)
    with pytest.raises(Conflict) as info:
        store.workloads.add_app("b1", "y", subnet="corp", image="acme/web:1")
    assert info.value.field == "address" and "no free address" in info.value.message
    store.workloads.delete_app("b2", "web")
    assert store.workloads.add_app("b1", "y", subnet="corp", image="acme/web:1").app.address == IPv4Address("192.0.2.5")


@pytest.mark.parametrize(("kw", "field", "exc"), [
    ({"address": "192.0.2.1"}, "address", StoreError),  # the subnet gateway
    ({"address": "192.0.2.7"}, "address", StoreError),  # broadcast
    ({"address": "198.51.100.9"}, "address", StoreError),  # outside the subnet
    ({"address": "not-an-ip"}, "address", StoreError),
    ({"subnet": "nope"}, "subnet", StoreError),
    ({"image": "Bad Image"}, "image", StoreError),
    ({"image": "acme/other:1"}, "image", StoreError),  # no uploaded tarball tags it
    ({"image_sha256": SHA_C}, "sha256", NotFound),  # not an uploaded image
    ({"memory_mb": 1}, "memory_mb", StoreError),
    ({"restart": "sometimes"}, "restart", StoreError),
    ({"env": {"1BAD": "x"}}, "env", StoreError),
    ({"colour": "red"}, "colour", StoreError),
])
def test_bad_apps_are_refused_naming_the_field_and_change_nothing(store, kw, field, exc):
    before = store.enterprises.get("acme").generation
    args = {"subnet": "corp", "image": "acme/web:1", **kw}
    with pytest.raises(exc) as info:
        store.workloads.add_app("b1", "web", **args)
    assert info.value.field == field, info.value
    assert store.workloads.list_apps("b1") == [] and store.enterprises.get("acme").generation == before


def test_the_address_is_unique_per_subnet_across_gateways(store):
    store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1", address="192.0.2.3")
    with pytest.raises(Conflict) as info:
        store.workloads.add_app("b2", "web", subnet="corp", image="acme/web:1", address="192.0.2.3")
    assert info.value.field == "address"
    with pytest.raises(Conflict):
        store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1")  # the name, on the same gateway


def test_rendered_config_carries_the_app_with_the_controllers_image_url_and_hash(store):
    store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1", command=["httpd", "-f"], env={"MODE": "x"},
                  memory_mb=64, restart="on-failure")
    cfg = store.documents.config_for("b1")
    (app,) = cfg.apps
    assert app.image_source is not None
    assert app.image_source.url == f"https://198.18.0.2:8444/images/{SHA_A}"
    assert app.image_source.sha256 == SHA_A
    assert (app.command, app.env, app.memory_mb, app.restart) == (("httpd", "-f"), (("MODE", "x"),), 64,
                                                                  "on-failure")
    assert store.documents.config_for("b2").apps == ()
    may_fetch = store.workloads.may_fetch
    assert may_fetch("S1", SHA_A) and not may_fetch("S2", SHA_A) and not may_fetch("S9", SHA_A)


def test_newest_upload_wins_unless_a_hash_is_named_and_update_moves_the_app(store):
    store.workloads.add_image("acme", SHA_B, 2000, ["acme/web:1", "acme/web:latest"])
    assert store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1").app.image_sha256 == SHA_B
    assert store.workloads.add_app("b1", "old", subnet="corp", image="acme/web:1",
                         image_sha256=SHA_A).app.image_sha256 == SHA_A
    g = store.enterprises.get("acme").generation
    rec = store.workloads.update_app("b1", "old", image_sha256=SHA_B, memory_mb=32)
    assert (rec.app.image_sha256, rec.app.memory_mb) == (SHA_B, 32)
    assert store.enterprises.get("acme").generation == g + 1
    store.workloads.update_app("b1", "old", memory_mb=32)  # no change: no new generation
    assert store.enterprises.get("acme").generation == g + 1
    with pytest.raises(StoreError) as info:
        store.workloads.update_app("b1", "old", subnet="other")
    assert info.value.field == "subnet"


def test_images_in_use_cannot_be_deleted_and_are_per_enterprise(store):
    store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1")
    with pytest.raises(Conflict) as info:
        store.workloads.delete_image("acme", SHA_A)
    assert "b1/web" in info.value.message
    store.enterprises.create("globex")
    with pytest.raises(NotFound):
        store.workloads.delete_image("globex", SHA_A)  # acme's image is not globex's
    store.enterprises.add_subnet("globex", "lan", vni=200, cidr="198.51.100.0/24", gateway="198.51.100.1")
    store.gateways.add("globex", "g1", serial="G1", uplinks=wan(3))
    with pytest.raises(StoreError) as info:
        store.workloads.add_app("g1", "web", subnet="lan", image="acme/web:1")
    assert info.value.field == "image"
    store.workloads.delete_app("b1", "web")
    store.workloads.delete_image("acme", SHA_A)
    assert store.workloads.list_images("acme") == []


def test_same_tarball_twice_is_one_image_and_untagged_tarballs_are_refused(store):
    rec, new = store.workloads.add_image("acme", SHA_A, 1000, ["acme/web:1"])
    assert not new and rec.references == ("acme/web:1",)
    with pytest.raises(StoreError) as info:
        store.workloads.add_image("acme", SHA_B, 10, [])
    assert info.value.field == "image"


def test_subnets_with_apps_cannot_be_deleted_and_a_hub_runs_none(store):
    store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1")
    with pytest.raises(Conflict) as info:
        store.enterprises.delete_subnet("acme", "corp")
    assert "b1/web" in info.value.message
    store.gateways.add("acme", "hub", serial="H1", uplinks=wan(4), role="hub")
    with pytest.raises(StoreError) as info:
        store.workloads.add_app("hub", "web", subnet="corp", image="acme/web:1")
    assert info.value.field == "gateway"


def test_deleting_a_gateway_frees_its_app_addresses(store):
    store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1")
    store.gateways.delete("b1")
    again = store.workloads.add_app("b2", "web", subnet="corp", image="acme/web:1")
    assert again.app.address == IPv4Address("192.0.2.6")


def test_without_a_device_site_apps_with_images_do_not_render(tmp_path):
    with Store(tmp_path / "d.db") as s:
        s.enterprises.create("acme")
        s.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
        s.gateways.add("acme", "b1", serial="S1", uplinks=wan(1))
        s.workloads.add_image("acme", SHA_A, 1, ["acme/web:1"])
        with pytest.raises(StoreError) as info:
            s.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1")
        assert "serves no devices" in info.value.message
        assert s.workloads.list_apps("b1") == []

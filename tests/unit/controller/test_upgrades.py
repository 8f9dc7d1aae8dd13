"""Issue 15 section 2, the controller's side: bundles uploaded like app images but kept only when a
release key verifies them, upgrade profiles per enterprise and per gateway rendered into every config,
the gateways' reports validated and shown, and the operator's commands (store, API, channel, CLI)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from controller import admin_cli
from controller.api import make_app
from controller.channel_server import ChannelHub, GatewaySession
from controller.store import Store, StoreError
from controller.store_db import SCHEMA_VERSION
from controller.store_upgrades import BundleRec
from image.bundle import generate_key, make_bundle
from nsg.channel import wire
from nsg.model.config import config_document
from nsg.model.upgrade import AgentReport, AttemptReport, RefusalReport, UpgradeState
from nsg.upgrade.bundle import load_release_keys
from tests.unit.controller.test_api import Api, error_of, run, wan
from tests.unit.upgrade.conftest import fake_ext4

ATOM, AWS = "nsg-atom-x86_64", "nsg-aws-x86_64"
BASE = "https://198.18.0.2:8444"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    key, pub = generate_key(tmp_path_factory.mktemp("signer"), "release")
    other, _ = generate_key(tmp_path_factory.mktemp("stranger"), "stranger")
    d = tmp_path_factory.mktemp("release-keys")  # what the controller is given: public keys only
    (d / pub.name).write_bytes(pub.read_bytes())
    return d, key, other


def bundle(tmp_path: Path, key: Path, version: str = "1.3.0", model: str = ATOM) -> Path:
    tmp_path.mkdir(exist_ok=True)
    img = tmp_path / f"{model}-{version}.img"
    img.write_bytes(fake_ext4(64 * 1024, seed=f"{model}{version}".encode()))
    out = tmp_path / f"{model}-{version}.nsgb"
    make_bundle(img, out, key, version=version, min_version="1.0.0", model=model)
    return out


def add(store: Store, ent: str, version: str, model: str = ATOM) -> BundleRec:
    sha = hashlib.sha256(f"{ent}{version}{model}".encode()).hexdigest()
    return store.upgrades.add_bundle(ent, sha256=sha, size=1000, model=model, version=version,
                                     min_version="1.0.0")[0]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        s.workloads.set_device_url(BASE)
        for ent, gws in (("acme", ("b1", "b2")), ("beta", ("g9",))):
            s.enterprises.create(ent)
            for i, g in enumerate(gws, start=1 if ent == "acme" else 9):
                s.gateways.add(ent, g, serial=f"S-{g}", uplinks=wan(i))
        yield s


def generation(store: Store) -> int:
    return store.enterprises.get("acme").generation


def test_store_bundles_profiles_and_what_configs_get(store):
    assert store.db.schema_version() == SCHEMA_VERSION == 7
    atom, aws = add(store, "acme", "1.3.0"), add(store, "acme", "1.3.0", AWS)
    assert store.upgrades.add_bundle("acme", sha256=atom.sha256, size=1000, model=ATOM, version="1.3.0",
                                     min_version="1.0.0")[1] is False  # the same bytes again: the same bundle
    with pytest.raises(StoreError, match="already") as err:  # another file of the same model and version
        store.upgrades.add_bundle("acme", sha256="f" * 64, size=1, model=ATOM, version="1.3.0", min_version="1.0.0")
    assert err.value.field == "version" and err.value.kind == "conflict"
    for bad, field in (("1.4.0", "version"), ("1.3", "version")):
        with pytest.raises(StoreError) as err:
            store.upgrades.set_profile("acme", bad)
        assert err.value.field == field
    assert store.documents.config_for("b1").upgrade is None
    g0 = generation(store)
    assert store.upgrades.set_profile("acme", "1.3.0").retry == 0 and generation(store) == g0 + 1
    up = store.documents.config_for("b1").upgrade
    assert (up.version, up.commit_after_s, up.retry) == ("1.3.0", 300, 0)
    assert [(b.model, b.url, b.sha256) for b in up.bundles] == [
        (ATOM, f"{BASE}/bundles/{atom.sha256}", atom.sha256), (AWS, f"{BASE}/bundles/{aws.sha256}", aws.sha256)]
    assert store.upgrades.set_profile("acme", "1.3.0").retry == 0 and generation(store) == g0 + 1  # no change
    assert store.upgrades.set_profile("acme", "1.3.0", retry=True).retry == 1 and generation(store) == g0 + 2
    assert store.documents.config_for("b2").upgrade.retry == 1

    b14 = add(store, "acme", "1.4.0")
    store.upgrades.set_profile("acme", "1.4.0", gateway="b2", commit_after_s=60)
    b1, b2 = store.documents.config_for("b1").upgrade, store.documents.config_for("b2").upgrade
    assert (b1.version, b2.version, b2.commit_after_s, b2.retry) == ("1.3.0", "1.4.0", 60, 0)
    assert [b.sha256 for b in b2.bundles] == [b14.sha256]
    with pytest.raises(StoreError, match="not in enterprise") as err:
        store.upgrades.set_profile("acme", "1.3.0", gateway="g9")
    assert err.value.field == "gateway"
    with pytest.raises(StoreError, match="5 to 86400"):
        store.upgrades.set_profile("acme", "1.3.0", commit_after_s=1)

    # a bundle of a targeted version for another model: a new generation carries it
    g1 = generation(store)
    arm = add(store, "acme", "1.4.0", "nsg-arm64")
    assert generation(store) == g1 + 1 and len(store.documents.config_for("b2").upgrade.bundles) == 2
    add(store, "acme", "2.0.0")  # an untargeted version: nothing changes for gateways
    assert generation(store) == g1 + 1

    for sha, who in ((atom.sha256, "enterprise acme"), (b14.sha256, "gateway b2")):
        with pytest.raises(StoreError, match=who) as err:
            store.upgrades.delete_bundle("acme", sha)
        assert err.value.kind == "conflict"
    p = store.upgrades.profiles("acme")
    assert (p.profile.version, {n: v.version for n, v in p.gateways.items()}) == ("1.3.0", {"b2": "1.4.0"})

    # who may fetch: the enterprise's gateways only
    assert store.upgrades.may_fetch("S-b1", atom.sha256) and store.upgrades.may_fetch("S-b2", arm.sha256)
    assert not store.upgrades.may_fetch("S-g9", atom.sha256)
    assert not store.upgrades.may_fetch("S-b1", "0" * 64) and not store.upgrades.may_fetch("nobody", atom.sha256)
    assert store.upgrades.bundles_in_use() >= {atom.sha256, aws.sha256, b14.sha256}

    # the device site moved: every config with an upgrade section gets the new URL
    g2, beta = generation(store), store.enterprises.get("beta").generation
    store.workloads.set_device_url("https://198.18.0.9:8444")
    assert generation(store) == g2 + 1 and store.enterprises.get("beta").generation == beta  # beta: no profile
    assert store.documents.config_for("b1").upgrade.bundles[0].url.startswith("https://198.18.0.9:8444/bundles/")

    store.upgrades.clear_profile("acme", gateway="b2")
    assert store.documents.config_for("b2").upgrade.version == "1.3.0"  # the enterprise's again
    store.upgrades.clear_profile("acme")
    store.upgrades.clear_profile("acme")  # clearing nothing is no error
    assert store.documents.config_for("b1").upgrade is None
    assert "upgrade" not in config_document(store.documents.config_for("b1"))  # a box predating it takes it
    assert config_document(store.documents.config_for("b1").model_copy(update={"upgrade": up}))["upgrade"]["version"]
    store.upgrades.delete_bundle("acme", b14.sha256)
    assert [(b.model, b.version) for b in store.upgrades.list_bundles("acme")] == [  # by model, then version
        ("nsg-arm64", "1.4.0"), (ATOM, "1.3.0"), (ATOM, "2.0.0"), (AWS, "1.3.0")]


def report(model: str = ATOM, action: str = "held", outcome_phase: str = "fell-back") -> UpgradeState:
    return UpgradeState(
        appliance=True, model=model, running_version="1.2.0", committed_version="1.2.0", booted_slot="a",
        committed_slot="a", state="committed", slot_versions={"a": "1.2.0", "b": "1.3.0"},
        last_attempt=AttemptReport(from_version="1.2.0", target_version="1.3.0", from_slot="a", target_slot="b",
                                   phase=outcome_phase, started=1.0, updated=2.0,
                                   reason="slot b was not healthy within 60 s: controller channel down"),
        agent=AgentReport(action=action, target="1.3.0", detail="1.3.0 was tried here and fell back", since=2.0))


def test_api_bundles_profiles_and_reports(tmp_path, store, keys):
    key_dir, key, stranger = keys
    token, hub, where = store.tokens.create("t"), ChannelHub(lambda serial: None), tmp_path / "bundles"
    good = bundle(tmp_path, key)
    forged = bundle(tmp_path, stranger, version="1.3.1")  # a key the controller does not have
    sha = hashlib.sha256(good.read_bytes()).hexdigest()

    async def scenario(client):
        api = Api(client, token)
        hdr = {**api.headers, "Content-Type": "application/x-tar"}
        resp = await client.post("/api/v1/enterprises/acme/bundles", data=good.read_bytes(), headers=hdr)
        doc = await resp.json()
        assert resp.status == 201, doc
        assert (doc["sha256"], doc["model"], doc["version"], doc["min_version"], doc["size"]) == (
            sha, ATOM, "1.3.0", "1.0.0", good.stat().st_size)
        assert doc["key_id"] == load_release_keys(key_dir)[0].key_id
        resp = await client.post("/api/v1/enterprises/acme/bundles", data=good.read_bytes(), headers=hdr)
        assert resp.status == 200
        for junk, says in ((forged.read_bytes(), "bad-signature"), (b"not a tar" * 100, "not-a-bundle"),
                           (b"", "empty"), (good.read_bytes()[:30000], "not-a-bundle")):
            resp = await client.post("/api/v1/enterprises/acme/bundles", data=junk, headers=hdr)
            err = (await resp.json())["error"]
            assert (resp.status, err["field"]) == (400, "bundle") and says in err["message"], err
            assert str(where) not in err["message"]
        rebuilt = bundle(tmp_path / "rebuilt", key)  # another file of the same model and version
        resp = await client.post("/api/v1/enterprises/acme/bundles", data=rebuilt.read_bytes(), headers=hdr)
        assert resp.status == 409 and error_of(await resp.json()) == ("conflict", "version")
        assert sorted(p.name for p in where.iterdir()) == [f"{sha}.nsgb"]  # nothing else kept
        resp = await client.post("/api/v1/enterprises/nope/bundles", data=good.read_bytes(), headers=hdr)
        assert resp.status == 404
        status, doc = await api("GET", "/enterprises/acme/bundles")
        assert [b["version"] for b in doc["bundles"]] == ["1.3.0"]

        status, doc = await api("PUT", "/enterprises/acme/upgrade", {"version": "1.3.0"})
        assert (status, doc) == (200, {"version": "1.3.0", "commit_after_s": None, "retry": 0})
        for body, field in (({"version": "9.9.9"}, "version"), ({"version": "1.3.0", "commit_after_s": 1},
                                                                 "commit_after_s"),
                            ({"version": 130}, "version"), ({"version": "1.3.0", "colour": 1}, "colour")):
            status, doc = await api("PUT", "/enterprises/acme/upgrade", body)
            assert status == 400 and error_of(doc) == ("invalid", field), (body, doc)
        status, cfg = await api("GET", "/gateways/b1/config")
        assert cfg["upgrade"]["bundles"] == [{"model": ATOM, "url": f"{BASE}/bundles/{sha}", "sha256": sha,
                                              "size": good.stat().st_size}]

        # the box reported its model: a gateway profile without a bundle for it is refused
        hub.upgrades["S-b1"] = (1234.0, report(model=AWS))
        status, doc = await api("PUT", "/gateways/b1/upgrade", {"version": "1.3.0", "commit_after_s": 90})
        assert status == 400 and error_of(doc) == ("invalid", "version") and AWS in doc["error"]["message"]
        hub.upgrades["S-b1"] = (1234.0, report())
        status, doc = await api("PUT", "/gateways/b1/upgrade", {"version": "1.3.0", "commit_after_s": 90})
        assert (status, doc["commit_after_s"]) == (200, 90)

        status, doc = await api("GET", "/enterprises/acme/upgrade")
        assert doc["profile"]["version"] == "1.3.0"
        rows = {g["name"]: g for g in doc["gateways"]}
        assert (rows["b1"]["source"], rows["b2"]["source"], rows["b2"]["state"]) == ("gateway", "enterprise", None)
        assert rows["b1"]["state"]["last_attempt"]["phase"] == "fell-back" and rows["b1"]["reported_at"] == 1234.0
        status, doc = await api("GET", "/gateways/b1/status")
        assert (doc["upgrade_target"], doc["upgrade"]["agent"]["action"], doc["upgrade_at"]) == ("1.3.0", "held",
                                                                                                  1234.0)

        status, doc = await api("DELETE", f"/enterprises/acme/bundles/{sha}")
        assert status == 409 and error_of(doc) == ("conflict", "sha256")
        assert (await api("DELETE", "/gateways/b1/upgrade"))[0] == 204
        assert (await api("DELETE", "/enterprises/acme/upgrade"))[0] == 204
        assert (await api("DELETE", f"/enterprises/acme/bundles/{sha}"))[0] == 204
        assert list(where.iterdir()) == []
        status, cfg = await api("GET", "/gateways/b1/config")
        assert cfg["upgrade"] is None

    run(store, scenario, hub=hub, bundles=where, release_keys=load_release_keys(key_dir))


def test_without_release_keys_or_a_device_site_bundles_are_refused(tmp_path, store, keys):
    token = store.tokens.create("t")
    good = bundle(tmp_path, keys[1])

    async def scenario(client):
        resp = await client.post("/api/v1/enterprises/acme/bundles", data=good.read_bytes(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-tar"})
        return resp.status, await resp.json()

    for kw, says in (({"bundles": tmp_path / "b"}, "--release-keys"),
                     ({"release_keys": load_release_keys(keys[0])}, "--devices")):
        status, doc = run(store, scenario, **kw)
        assert status == 409 and says in doc["error"]["message"]
    assert not (tmp_path / "b").exists()


def test_the_channel_keeps_validated_upgrade_reports():
    hub = ChannelHub(lambda serial: (1, {}))
    session = GatewaySession("S1", ws=None)  # type: ignore[arg-type]
    session.order.receive(wire.Hello(versions=(1,), serial="S1"))
    session.order.send(wire.Hello(versions=(1,)))
    good = report().model_dump(mode="json")
    hub._take(session, wire.Event(ts=5.0, kind="upgrade", detail=good))
    assert hub.upgrades["S1"][1] == report() and hub.counters["upgrade_reports"] == 1
    for bad, where in (({**good, "running_version": "1.2.0\x1b[2J"}, "running_version"),
                       ({**good, "refused": {f"c{i}": 1 for i in range(17)}}, "refused"),
                       ({**good, "agent": {"action": "format-disk"}}, "agent.action"),
                       ({**good, "appliance": "yes please"}, "appliance")):
        with pytest.raises(wire.ChannelProtocolError, match=f"event.detail.{where}"):
            hub._take(session, wire.Event(ts=6.0, kind="upgrade", detail=bad))
    assert hub.upgrades["S1"][1] == report() and hub.counters["upgrade_reports"] == 1  # the last good one stays


# --- the operator's commands, against the API on a loopback port ------------------------------------


@pytest.fixture
def api_url(tmp_path, store, keys, monkeypatch):
    hub = ChannelHub(lambda serial: None)
    hub.upgrades["S-b1"] = (time.time() - 5, report())
    app = make_app(store, hub=hub, bundles=tmp_path / "bundles", release_keys=load_release_keys(keys[0]))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", store.tokens.create("cli"))
    monkeypatch.setenv("NSG_CONTROLLER_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "*")
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = admin_cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_the_operators_commands(api_url, capsys, tmp_path, keys):
    good, forged = bundle(tmp_path, keys[1]), bundle(tmp_path, keys[2], version="1.4.0")
    status, out, _ = cli(capsys, "bundle", "upload", "acme", str(good))
    assert status == 0 and json.loads(out)["version"] == "1.3.0"
    status, _, err = cli(capsys, "bundle", "upload", "acme", str(forged))
    assert status == 2 and "bad-signature" in err
    status, out, _ = cli(capsys, "bundle", "list", "acme")
    assert out.splitlines()[0].split()[:3] == ["MODEL", "VERSION", "MIN"]
    assert out.splitlines()[1].split()[:3] == [ATOM, "1.3.0", "1.0.0"]
    status, _, err = cli(capsys, "upgrade", "set", "acme", "--version", "9.9.9")
    assert status == 2 and "version: no uploaded bundle of version 9.9.9" in err
    assert cli(capsys, "upgrade", "set", "acme", "--version", "1.3.0", "--commit-after", "120")[0] == 0
    status, _, err = cli(capsys, "upgrade", "set", "beta", "--gateway", "b1", "--version", "1.3.0")
    assert status == 2 and "is in enterprise acme, not beta" in err
    status, out, _ = cli(capsys, "upgrade", "set", "acme", "--gateway", "b2", "--version", "1.3.0", "--retry")
    assert status == 0 and json.loads(out)["retry"] == 1

    status, out, _ = cli(capsys, "upgrade", "status", "acme")
    lines = out.splitlines()
    assert lines[0] == "enterprise acme: upgrade to 1.3.0, commit within 120 s"
    assert lines[1].split() == ["GATEWAY", "TARGET", "RUNNING", "COMMITTED", "SLOT", "LAST", "ATTEMPT", "OUTCOME",
                                "NOW"]
    b1 = lines[2]
    for piece in ("b1", "1.3.0", "1.2.0", "1.2.0 -> 1.3.0 (slot b)", "fell back: slot b was not healthy",
                  "held: 1.3.0 was tried here and fell back"):
        assert piece in b1, b1
    assert lines[3].split()[:5] == ["b2", "1.3.0", "(own)", "not", "reported"]
    assert lines[4].startswith("reported: b1 5 s ago") or lines[4].startswith("reported: b1 6 s ago")
    status, out, _ = cli(capsys, "upgrade", "status", "acme", "--json")
    assert json.loads(out)["gateways"][0]["state"]["model"] == ATOM
    status, out, _ = cli(capsys, "gateway", "status", "b1")
    assert "upgrade to 1.3.0 held" in out.splitlines()[0] and "fell back: slot b" in out

    assert cli(capsys, "upgrade", "clear", "acme", "--gateway", "b2")[0] == 0
    assert cli(capsys, "upgrade", "clear", "acme")[0] == 0
    status, out, _ = cli(capsys, "upgrade", "status", "acme")
    assert out.splitlines()[0] == "enterprise acme: no upgrade profile"
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    assert cli(capsys, "bundle", "delete", "acme", sha)[0] == 0
    assert cli(capsys, "bundle", "list", "acme", "--json")[1].strip().startswith('{\n  "bundles": []')


def test_serve_refuses_a_key_directory_with_no_key(capsys, tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "junk.pem").write_text("not a key")
    status, _, err = cli(capsys, "serve", "--db", str(tmp_path / "c.db"), "--listen", "127.0.0.1:0",
                         "--release-keys", str(tmp_path / "keys"))
    assert status == 2 and "--release-keys" in err and "no usable release key" in err


def test_the_status_view_of_every_kind_of_gateway():
    from controller.cli_views import upgrade_view

    refused = report(action="held").model_copy(update={"last_refusal": RefusalReport(
        at=9.0, code="wrong-model", fault="policy", message="bundle is for model x, this box is y")})
    dev = UpgradeState(appliance=False, detail="not an A/B appliance: /usr/share/nsg/release.json is missing",
                       agent=AgentReport(action="not-appliance", target="1.3.0"))
    trial = report(action="trial").model_copy(update={"booted_slot": "b", "running_version": "1.3.0"})
    doc = {"enterprise": "acme", "profile": {"version": "1.3.0", "commit_after_s": None, "retry": 2},
           "gateways": [{"name": n, "target": "1.3.0", "source": "enterprise", "connected": True,
                         "reported_at": 100.0, "state": st.model_dump(mode="json")}
                        for n, st in (("r1", refused), ("d1", dev), ("t1", trial))]}
    lines = upgrade_view(doc, 130.0)
    assert lines[0] == "enterprise acme: upgrade to 1.3.0, retried 2 times"
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert "refused (wrong-model): bundle is for model x, this box is y" in rows["r1"]
    assert rows["d1"].split()[1:4] == ["1.3.0", "-", "-"] and rows["d1"].endswith(
        "not an A/B appliance: /usr/share/nsg/release.json is missing")
    assert rows["t1"].split()[2:7] == ["1.3.0", "1.2.0", "b", "(trial)", "1.2.0"]
    assert lines[5] == "reported: r1 30 s ago, d1 30 s ago, t1 30 s ago"

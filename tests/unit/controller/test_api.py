"""controller.api over HTTP on 127.0.0.1 (aiohttp TestServer), and the admin CLI against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller import admin_cli
from controller.api import ROUTES, make_app
from controller.store import Store
from nsg.model import parse_config

ROOT = Path(__file__).resolve().parents[3]
SECRET_CODE = "activation-XYZZY-31337"


def wan(n: int, **extra) -> list[dict]:
    return [{"name": "wan0", "interface": "eth0", "mode": "static", "address": f"198.18.{n}.2/24",
             "gateway": f"198.18.{n}.1", **extra}]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        yield s


@pytest.fixture
def token(store):
    return store.tokens.create("test")


def run(store: Store, scenario, **app_kw):
    """Runs ``await scenario(client)`` against the app on a loopback TestServer."""

    async def main():
        async with TestClient(TestServer(make_app(store, **app_kw), host="127.0.0.1")) as client:
            return await scenario(client)

    return asyncio.run(main())


class Api:
    """Calls with the bearer token; returns (status, decoded body or None, raw text)."""

    def __init__(self, client: TestClient, token: str):
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}
        self.texts: list[str] = []

    async def __call__(self, method: str, path: str, body: object = None, **kw):
        resp = await self.client.request(method, "/api/v1" + path, json=body, headers=self.headers, **kw)
        text = await resp.text()
        self.texts.append(text)
        return resp.status, (json.loads(text) if text else None)


def error_of(doc: dict) -> tuple[str, str | None]:
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message", "field"}
    return doc["error"]["code"], doc["error"]["field"]


def test_every_route_needs_a_valid_bearer_token(store, token):
    async def scenario(client):
        paths = [(r.method, re.sub(r"\{[^}]+\}", "x", r.path)) for r in ROUTES] + [("GET", "/api/v1/nope")]
        for method, path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                            {"Authorization": "Bearer "}):
                resp = await client.request(method, path, headers=headers, json={})
                assert resp.status == 401, (method, path, headers)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert error_of(await resp.json()) == ("unauthorized", None)
        resp = await client.get("/api/v1/nope", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 404 and error_of(await resp.json())[0] == "not_found"
        resp = await client.put("/api/v1/enterprises", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 405 and error_of(await resp.json())[0] == "method_not_allowed"

    run(store, scenario)


def test_token_check_can_be_given(store):
    async def scenario(client):
        ok = await client.get("/api/v1/enterprises", headers={"Authorization": "Bearer let-me-in"})
        no = await client.get("/api/v1/enterprises", headers={"Authorization": "Bearer other"})
        return ok.status, no.status

    assert run(store, scenario, tokens=lambda t: t == "let-me-in") == (200, 401)


def test_crud_round_trip(store, token):
    async def scenario(client):
        api = Api(client, token)
        status, ent = await api("POST", "/enterprises", {"name": "acme", "transport": "esp"})
        # no data-plane secret by default (issue 13 section 2): gateways authenticate with their LDevIDs
        assert status == 201 and ent["generation"] == 1 and not ent["psk_set"] and ent["ipsec"]["auth"] == "ldevid"
        assert (await api("GET", "/enterprises/acme")) == (200, ent)
        assert (await api("GET", "/enterprises")) == (200, {"enterprises": [ent]})

        subnet = {"name": "corp", "vni": 100, "cidr": "192.0.2.0/24", "gateway": "192.0.2.1"}
        status, got = await api("POST", "/enterprises/acme/subnets", subnet)
        assert status == 201 and got == {"enterprise": "acme", **subnet,  # port security on by default
                                         "port_security": {"max_macs": 256, "learn_rate": 20, "learn_burst": 40}}
        assert (await api("GET", "/enterprises/acme/subnets")) == (200, {"subnets": [got]})

        body = {"name": "b1", "serial": "SN1", "uplinks": wan(1), "ports": {"corp": ["lan0"]}}
        status, b1 = await api("POST", "/enterprises/acme/gateways", body)
        assert status == 201 and b1["system_ip"] == "198.19.255.1" and b1["ports"] == {"corp": ["lan0"]}
        status, b2 = await api("POST", "/enterprises/acme/gateways", {**body, "name": "b2", "serial": "SN2",
                                                                      "uplinks": wan(2), "ports": {}})
        assert status == 201 and b2["system_ip"] == "198.19.255.2"
        assert (await api("GET", "/enterprises/acme/gateways")) == (200, {"gateways": [b1, b2]})
        assert (await api("GET", "/gateways/b1")) == (200, b1)

        status, patched = await api("PATCH", "/gateways/b2", {"behind_nat": True, "ports": {"corp": ["lan3"]}})
        assert status == 200 and patched["behind_nat"] and patched["ports"] == {"corp": ["lan3"]}
        assert patched["system_ip"] == b2["system_ip"]
        assert (await api("GET", "/enterprises/acme"))[1]["generation"] == 5

        assert (await api("DELETE", "/enterprises/acme/subnets/corp"))[0] == 409  # ports use it
        assert (await api("DELETE", "/enterprises/acme"))[0] == 409  # gateways in it
        assert (await api("DELETE", "/gateways/b2")) == (204, None)
        status, doc = await api("GET", "/gateways/b2")
        assert status == 404 and error_of(doc) == ("not_found", "name")
        assert (await api("PATCH", "/gateways/b1", {"ports": {}}))[0] == 200
        assert (await api("DELETE", "/enterprises/acme/subnets/corp")) == (204, None)
        assert (await api("DELETE", "/gateways/b1")) == (204, None)
        assert (await api("DELETE", "/enterprises/acme")) == (204, None)
        status, doc = await api("GET", "/enterprises/acme")
        assert status == 404 and error_of(doc) == ("not_found", "enterprise")

    run(store, scenario)


def test_bad_input_is_refused_naming_the_field(store, token):
    store.enterprises.create("acme")
    store.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
    store.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1))
    subnet = {"name": "dmz", "vni": 200, "cidr": "198.51.100.0/24", "gateway": "198.51.100.1"}
    gateway = {"name": "b2", "serial": "SN2", "uplinks": wan(2)}
    cases = [
        ("POST", "/enterprises/acme/subnets", {**subnet, "cidr": "198.51.100.7/24"}, 400, "invalid", "cidr"),
        ("POST", "/enterprises/acme/subnets", {**subnet, "cidr": "192.0.2.0/25", "gateway": "192.0.2.1"},
         400, "invalid", "cidr"),
        ("POST", "/enterprises/acme/subnets", {**subnet, "vni": 1 << 24}, 400, "invalid", "vni"),
        ("POST", "/enterprises/acme/subnets", {**subnet, "vni": "many"}, 400, "invalid", "vni"),
        ("POST", "/enterprises/acme/subnets", {**subnet, "vni": 100}, 409, "conflict", "vni"),
        ("POST", "/enterprises/acme/subnets", {**subnet, "gateway": "203.0.113.1"}, 400, "invalid", "gateway"),
        ("POST", "/enterprises/acme/subnets", {**subnet, "colour": "red"}, 400, "invalid", "colour"),
        ("POST", "/enterprises/nope/subnets", subnet, 404, "not_found", "enterprise"),
        ("POST", "/enterprises/acme/gateways", {**gateway, "serial": "SN1"}, 409, "conflict", "serial"),
        ("POST", "/enterprises/acme/gateways", {**gateway, "name": "b1"}, 409, "conflict", "name"),
        ("POST", "/enterprises/acme/gateways", {**gateway, "uplinks": wan(2, address="198.18.2.2/33")},
         400, "invalid", "uplinks[0].address"),
        ("POST", "/enterprises/acme/gateways", {**gateway, "ports": {"nope": ["lan0"]}}, 400, "invalid",
         "ports.nope"),
        ("POST", "/enterprises/acme/gateways", {**gateway, "system_ip": "198.19.255.9"}, 400, "invalid",
         "system_ip"),
        ("POST", "/enterprises/acme/gateways", {**gateway, "activation_code": "1"}, 400, "invalid",
         "activation_code"),
        ("PATCH", "/gateways/b1", {"uplinks": None}, 400, "invalid", "uplinks"),
        ("PATCH", "/gateways/b1", {"name": "b9"}, 400, "invalid", "name"),
        ("POST", "/enterprises", {"name": "acme"}, 409, "conflict", "name"),
        ("POST", "/enterprises", {"name": "x", "transport": "gre"}, 400, "invalid", "transport"),
        ("POST", "/enterprises", ["not", "an", "object"], 400, "invalid", None),
    ]

    async def scenario(client):
        api = Api(client, token)
        for method, path, body, status, code, field in cases:
            got_status, doc = await api(method, path, body)
            assert (got_status, *error_of(doc)) == (status, code, field), (path, body, doc)
        as_json = {**api.headers, "Content-Type": "application/json"}
        resp = await client.post("/api/v1/enterprises", data=b"{nope", headers=as_json)
        assert resp.status == 400 and error_of(await resp.json()) == ("bad_json", None)
        resp = await client.post("/api/v1/enterprises", data=b"[" * 100_000, headers=as_json)
        assert resp.status == 413 and error_of(await resp.json())[0] == "too_large"
        assert not any("Traceback" in t for t in api.texts)

    run(store, scenario)
    assert [g.name for g in store.gateways.list("acme")] == ["b1"] and store.enterprises.get("acme").generation == 3


def test_activation_code_is_write_only(store, token):
    store.enterprises.create("acme")

    async def scenario(client):
        api = Api(client, token)
        body = {"name": "b1", "serial": "SN1", "uplinks": wan(1), "activation_code": SECRET_CODE}
        status, doc = await api("POST", "/enterprises/acme/gateways", body)
        assert status == 201 and doc["activation_code_set"] is True and "activation_code" not in doc
        await api("GET", "/gateways/b1")
        await api("GET", "/enterprises/acme/gateways")
        await api("GET", "/gateways/b1/config")
        await api("PATCH", "/gateways/b1", {"activation_code": SECRET_CODE[::-1]})
        await api("POST", "/enterprises/acme/gateways", {**body, "name": "b2"})  # 409 on the serial
        status, doc = await api("PATCH", "/gateways/b1", {"activation_code": None})
        assert status == 200 and doc["activation_code_set"] is False
        return api.texts

    texts = run(store, scenario)
    assert len(texts) == 7
    assert not any(SECRET_CODE in t or SECRET_CODE[::-1] in t for t in texts)
    assert store.gateways.check_activation("SN1", None)


def test_rendered_config_is_the_full_mesh_at_the_enterprise_generation(store, token):
    async def scenario(client):
        api = Api(client, token)
        await api("POST", "/enterprises", {"name": "acme", "transport": "esp", "ipsec": {"dpd_s": 9}})
        await api("POST", "/enterprises/acme/subnets",
                  {"name": "corp", "vni": 100, "cidr": "192.0.2.0/24", "gateway": "192.0.2.1"})
        for i in (1, 2, 3):
            await api("POST", "/enterprises/acme/gateways", {"name": f"b{i}", "serial": f"SN{i}", "uplinks": wan(i)})
        generation = (await api("GET", "/enterprises/acme"))[1]["generation"]
        configs = {}
        for i in (1, 2, 3):
            status, doc = await api("GET", f"/gateways/b{i}/config")
            assert status == 200
            configs[f"b{i}"] = parse_config(doc, source=f"b{i}")
        await api("DELETE", "/gateways/b3")
        status, after = await api("GET", "/gateways/b1/config")
        return generation, configs, parse_config(after)

    generation, configs, after = run(store, scenario)
    assert generation == 5
    for name, cfg in configs.items():
        assert cfg.generation == generation and cfg.ipsec.dpd_s == 9 and cfg.ipsec.auth == "ldevid"
        assert {p.name for p in cfg.peers} == {"b1", "b2", "b3"} - {name}
        assert {str(p.system_ip) for p in cfg.peers} | {str(cfg.system_ip)} == {
            "198.19.255.1", "198.19.255.2", "198.19.255.3"}
    assert after.generation == generation + 1 and [p.name for p in after.peers] == ["b2"]


def test_a_server_fault_tells_the_client_nothing(store, token, monkeypatch, caplog):
    def boom(*args, **kw):
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr(store.enterprises, "list", boom)

    async def scenario(client):
        resp = await client.get("/api/v1/enterprises", headers={"Authorization": f"Bearer {token}"})
        return resp.status, await resp.text()

    status, text = run(store, scenario)
    assert status == 500 and error_of(json.loads(text)) == ("internal", None)
    assert "hunter2" not in text and "Traceback" not in text
    assert "hunter2" in caplog.text  # but the operator's log has it


# -- the admin CLI against a real server -----------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    """`nsg-controller serve` in a subprocess on 127.0.0.1, an ephemeral port; stopped afterwards."""
    db = tmp_path / "server.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.admin_cli", "serve", "--db", str(db), "--listen", "127.0.0.1:0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "*"})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        m = re.search(r"http://127\.0\.0\.1:(\d+)/api/v1", line)
        assert m, f"server did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield f"http://127.0.0.1:{m[1]}", db
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = admin_cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_round_trip(server, capsys, monkeypatch, tmp_path):
    url, db = server
    monkeypatch.delenv("NSG_CONTROLLER_TOKEN", raising=False)
    status, out, err = cli(capsys, "token", "create", "admin", "--db", str(db))
    assert status == 0 and "shown once" in err
    token = out.strip()
    assert re.fullmatch(r"nsgc_[\w-]{40,}", token)

    status, _, err = cli(capsys, "enterprise", "list", "--url", url)
    assert status == 2 and "no admin token" in err
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "bad")
    status, _, err = cli(capsys, "enterprise", "list", "--url", url)
    assert status == 2 and "unauthorized" in err

    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", token)
    monkeypatch.setenv("NSG_CONTROLLER_URL", url)
    assert cli(capsys, "enterprise", "create", "acme", "--transport", "esp")[0] == 0
    assert cli(capsys, "subnet", "add", "acme", "corp", "--vni", "100", "--cidr", "192.0.2.0/24",
               "--gateway", "192.0.2.1")[0] == 0
    status, _, err = cli(capsys, "subnet", "add", "acme", "dmz", "--vni", "100", "--cidr", "198.51.100.0/24",
                         "--gateway", "198.51.100.1")
    assert status == 2 and err.startswith("nsg-controller: vni: ") and "[conflict]" in err
    code_file = tmp_path / "code"
    code_file.write_text(SECRET_CODE + "\n")
    status, out, _ = cli(capsys, "gateway", "add", "acme", "b1", "--serial", "SN1", "--port", "corp=lan0,lan1",
                         "--uplink", "name=wan0,interface=eth0,mode=static,address=198.18.1.2/24,gateway=198.18.1.1",
                         "--activation-code-file", str(code_file))
    assert status == 0 and json.loads(out)["system_ip"] == "198.19.255.1" and SECRET_CODE not in out
    assert cli(capsys, "gateway", "add", "acme", "b2", "--serial", "SN2", "--behind-nat",
               "--uplink", "name=wan0,interface=eth0,mode=dhcp,public=203.0.113.7")[0] == 0
    status, _, err = cli(capsys, "gateway", "add", "acme", "b3", "--serial", "SN2",
                         "--uplink", "name=wan0,interface=eth0,mode=dhcp,public=203.0.113.8")
    assert status == 2 and "serial: " in err and "[conflict]" in err

    status, out, _ = cli(capsys, "gateway", "list", "acme")
    assert status == 0 and out.split("\n")[0].split() == ["NAME", "ROLE", "SERIAL", "SYSTEM", "IP", "BEHIND", "NAT"]
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["b1", "edge", "SN1", "198.19.255.1", "no"], ["b2", "edge", "SN2", "198.19.255.2", "yes"]]
    status, out, _ = cli(capsys, "gateway", "show", "b1", "--json")
    assert status == 0 and json.loads(out)["ports"] == {"corp": ["lan0", "lan1"]}
    status, out, _ = cli(capsys, "gateway", "show", "b1")  # for people: health first (no device site here)
    assert status == 0 and out.splitlines()[0] == "b1: NOT OK: channel down" and "lan0, lan1" in out
    status, out, _ = cli(capsys, "gateway", "config", "b1")
    cfg = parse_config(json.loads(out))
    assert [(p.name, p.initiate) for p in cfg.peers] == [("b2", "never")] and cfg.generation == 4
    status, out, _ = cli(capsys, "enterprise", "list")
    assert [line.split() for line in out.splitlines()] == [["NAME", "TRANSPORT", "GENERATION"], ["acme", "esp", "4"]]
    assert cli(capsys, "gateway", "delete", "b2")[0] == 0
    status, _, err = cli(capsys, "gateway", "show", "b2")
    assert status == 2 and "not_found" in err
    status, out, _ = cli(capsys, "subnet", "list", "acme")
    assert out.splitlines()[1].split() == ["corp", "100", "192.0.2.0/24", "192.0.2.1", "256", "MACs,", "20/s",
                                           "(burst", "40)"]

    status, out, _ = cli(capsys, "token", "list", "--db", str(db))
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "admin"] and token not in out
    assert cli(capsys, "token", "revoke", "admin", "--db", str(db))[0] == 0
    status, _, err = cli(capsys, "enterprise", "list")
    assert status == 2 and "unauthorized" in err


def test_cli_refuses_what_it_cannot_do(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "t")
    status, _, err = cli(capsys, "serve", "--db", str(tmp_path / "x.db"), "--listen", "0.0.0.0:8443")
    assert status == 2 and "loopback" in err and not (tmp_path / "x.db").exists()
    status, _, err = cli(capsys, "token", "list", "--db", str(tmp_path / "missing.db"))
    assert status == 2 and "no such file" in err
    status, _, err = cli(capsys, "enterprise", "list", "--url", "http://127.0.0.1:9")
    assert status == 1 and "cannot reach" in err


def test_ports_and_uplinks_the_gateway_lacks_are_refused_once_it_reported_its_interfaces(store, token):
    """Issue 13 section 3: a LAN port the box does not have cut its LAN while both sides said "ok"."""
    from controller.channel_server import ChannelHub

    hub = ChannelHub(lambda _serial: None)
    store.enterprises.create("acme")
    store.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
    store.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), ports={"corp": ["lan0"]})
    hub.interfaces["SN1"] = ("eth0", "lan0", "lan1")

    async def scenario(client):
        api = Api(client, token)
        gen = store.enterprises.get("acme").generation
        status, body = await api("PATCH", "/gateways/b1", {"ports": {"corp": ["lan9"]}})
        assert status == 400 and error_of(body) == ("invalid", "ports.corp[0]") and "lan9" in body["error"]["message"]
        status, body = await api("PATCH", "/gateways/b1", {"uplinks": [{**wan(1)[0], "interface": "wwan0"}]})
        assert status == 400 and error_of(body) == ("invalid", "uplinks[0].interface")
        assert store.enterprises.get("acme").generation == gen and store.gateways.get("b1").ports == {"corp": ("lan0",)}
        status, _ = await api("PATCH", "/gateways/b1?confirm_s=2", {"ports": {"corp": ["lan1"]}})
        assert status == 400  # a window shorter than 5 s
        status, _ = await api("PATCH", "/gateways/b1?confirm_s=20", {"ports": {"corp": ["lan1"]}})
        assert status == 200 and hub.confirm_next["SN1"] == 20.0
        status, st = await api("GET", "/gateways/b1/status")
        assert status == 200 and st["interfaces"] == ["eth0", "lan0", "lan1"] and st["connected"] is False

    run(store, scenario, hub=hub)

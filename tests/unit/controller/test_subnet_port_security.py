"""A subnet's LAN port security is the operator's, from the controller (issue 23: "configurable per
subnet, from the controller"): set at creation or later over the API, stored (NULL: the defaults,
'off': none), rendered into every gateway's config, and it moves the route budgets with it (the
reflector's view, the other sites' ``evpn.remote_limits``)."""

from __future__ import annotations

import json

from controller.route_budget import MARGIN, ROUTES_PER_HOST
from tests.unit.controller.test_api import Api, error_of, run, server, store, token, wan  # noqa: F401 - fixtures


def test_port_security_is_set_stored_rendered_and_budgeted(store, token):  # noqa: F811 - the fixtures
    async def scenario(client):
        api = Api(client, token)
        await api("POST", "/enterprises", {"name": "acme", "transport": "esp"})
        subnet = {"name": "corp", "vni": 100, "cidr": "192.0.2.0/24", "gateway": "192.0.2.1",
                  "port_security": {"max_macs": 16, "learn_rate": 5, "learn_burst": 8}}
        status, got = await api("POST", "/enterprises/acme/subnets", subnet)
        assert status == 201 and got["port_security"] == subnet["port_security"]
        for i, role in ((1, "edge"), (2, "edge"), (9, "hub")):
            body = {"name": f"g{i}", "serial": f"SN{i}", "uplinks": wan(i), "role": role,
                    "ports": {"corp": ["lan0", "lan1"]} if role == "edge" else {}}
            assert (await api("POST", "/enterprises/acme/gateways", body))[0] == 201
        generation = (await api("GET", "/enterprises/acme"))[1]["generation"]

        cfg = store.documents.config_for("g1")
        assert cfg.subnets[0].port_security.max_macs == 16
        limits = {str(rl.system_ip): rl.max_routes for rl in cfg.evpn.remote_limits}
        assert list(limits.values()) == [MARGIN + 1 + ROUTES_PER_HOST * 2 * 16]  # g2: two ports of 16

        path = "/enterprises/acme/subnets/corp/port-security"
        status, err = await api("PUT", path, {"port_security": {"max_macs": 0}})
        assert status == 400 and error_of(err)[1] == "port_security.max_macs"
        assert (await api("PUT", "/enterprises/acme/subnets/nope/port-security", {"port_security": None}))[0] == 404
        assert (await api("GET", "/enterprises/acme"))[1]["generation"] == generation  # refused: nothing changed

        status, got = await api("PUT", path, {"port_security": None})
        assert status == 200 and got["port_security"] is None
        assert (await api("GET", "/enterprises/acme"))[1]["generation"] == generation + 1
        cfg = store.documents.config_for("g1")
        assert cfg.subnets[0].port_security is None and cfg.evpn.remote_limits == ()  # unbounded: the default
        assert (await api("GET", "/enterprises/acme/subnets"))[1]["subnets"][0]["port_security"] is None

        await api("PUT", path, {"port_security": None})  # the same again: no new generation
        assert (await api("GET", "/enterprises/acme"))[1]["generation"] == generation + 1
        status, got = await api("PUT", path, {"port_security": {}})  # the defaults back
        assert got["port_security"] == {"max_macs": 256, "learn_rate": 20, "learn_burst": 40}
        assert store.documents.config_for("g1").subnets[0].port_security.max_macs == 256

    run(store, scenario)


def test_the_cli_sets_port_security_flag_by_flag(server, capsys, monkeypatch):  # noqa: F811 - the fixture
    from tests.unit.controller.test_api import cli

    url, db = server
    status, out, _ = cli(capsys, "token", "create", "admin", "--db", str(db))
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", out.strip())
    monkeypatch.setenv("NSG_CONTROLLER_URL", url)
    assert cli(capsys, "enterprise", "create", "acme", "--transport", "esp")[0] == 0
    status, out, _ = cli(capsys, "subnet", "add", "acme", "corp", "--vni", "100", "--cidr", "192.0.2.0/24",
                         "--gateway", "192.0.2.1", "--max-macs", "32")
    assert status == 0 and json.loads(out)["port_security"] == {"max_macs": 32, "learn_rate": 20, "learn_burst": 40}
    status, out, _ = cli(capsys, "subnet", "port-security", "acme", "corp", "--learn-rate", "5")
    assert status == 0 and json.loads(out)["port_security"] == {"max_macs": 32, "learn_rate": 5, "learn_burst": 40}
    status, _, err = cli(capsys, "subnet", "port-security", "acme", "corp", "--off", "--max-macs", "3")
    assert status == 2 and "--off takes no" in err
    status, _, err = cli(capsys, "subnet", "port-security", "acme", "corp", "--max-macs", "0")
    assert status == 2 and "port_security.max_macs" in err
    status, out, _ = cli(capsys, "subnet", "list", "acme")
    assert "32 MACs, 5/s (burst 40)" in out
    assert cli(capsys, "subnet", "port-security", "acme", "corp", "--off")[0] == 0
    status, out, _ = cli(capsys, "subnet", "list", "acme")
    assert out.splitlines()[1].split()[-1] == "off"

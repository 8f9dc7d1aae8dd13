"""Issue 13 section 6: the operator's views. `gateway status/show` read as a health line and sections with
human times (`--json` for scripts); lists take `--json`; text a gateway supplied never reaches the terminal
with its control characters raw; a mistyped flag of a subcommand shows that subcommand's usage."""

from __future__ import annotations

import json
import re
import time

import pytest

from controller import admin_cli
from controller import cli as controller_cli
from controller.api_models import AppLive, GatewayStatus, VmLive

ESC = "\x1b"
EVIL = "\x1b[2J\x1b]0;owned\x07\r\nFAKE: all good\u202e"
RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # what must not reach a terminal


def status_doc(**kw) -> dict:
    base = {"name": "b1", "connected": True, "generation": 5, "sent_generation": 5, "applied_generation": 5,
            "telemetry_at": time.time() - 12, "counters": {"generation": 5, "uplink.wan0.rx_bytes": 1234},
            "apps": {"web": AppLive(state="running", attached=True, address="192.0.2.254/24", restarts=0)},
            "vms": {"vm1": VmLive(state="running", attached=True, address="192.0.2.253/24", restarts=0)}}
    return GatewayStatus.model_validate({**base, **kw}).model_dump(mode="json")


GATEWAY = {"enterprise": "acme", "name": "b1", "serial": "SN1", "system_ip": "198.19.255.1", "role": "edge",
           "uplinks": [{"name": "wan0", "interface": "eth0", "mode": "static", "address": "198.18.1.2/24",
                        "gateway": "198.18.1.1", "mtu": 1500, "public": None, "egress_kbit": None,
                        "ingress_kbit": None}],
           "ports": {"corp": ["lan0", "lan1"]}, "behind_nat": False, "activation_code_set": True,
           "created": "2030-01-01T12:00:00+00:00"}


@pytest.fixture
def api(monkeypatch):
    """The controller's answers, by path; the CLI's HTTP client is replaced by a lookup."""
    answers: dict[str, object] = {}
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "nsgc_test")

    def call(self, method, path, body=None, **kw):
        assert method == "GET", (method, path)
        return answers[path]

    monkeypatch.setattr(admin_cli.Client, "call", call)
    return answers


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = admin_cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_safe_escapes_control_characters():
    from controller import cli_views

    assert cli_views.safe("plain text, ünïcode ok") == "plain text, ünïcode ok"
    assert cli_views.safe("a\x1b[31mb\nc\rd\te\x7f\x9b\u202e\x00") == \
        "a\\x1b[31mb\\nc\\rd\\te\\x7f\\x9b\\u202e\\x00"
    assert cli_views.safe(None) == "-" and cli_views.safe(3) == "3"


def test_human_times():
    from controller import cli_views

    now = 1_900_000_000.0
    assert cli_views.ago(now - 12, now) == "12 s ago"
    assert cli_views.ago(now - 125, now) == "2 min ago"
    assert cli_views.ago(now - 7300, now) == "2 h ago"
    assert cli_views.ago(now - 3 * 86400, now) == "3 d ago"
    assert cli_views.ago(now + 30, now) == "in 30 s"
    assert cli_views.iso(now) == "2030-03-17T17:46:40Z"


def test_a_healthy_gateway_reads_ok_then_sections(api, capsys):
    doc = status_doc()
    api["/gateways/b1/status"] = doc
    status, out, _ = run_cli(capsys, "gateway", "status", "b1")
    first, *rest = out.splitlines()
    assert status == 0 and first == "b1: OK"
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(1[2-9] s ago\)", out), out
    assert str(doc["telemetry_at"]) not in out  # no epoch floats
    for section in ("Channel", "Configuration", "Apps", "VMs", "Counters"):
        assert section in rest, (section, out)
    assert re.search(r"^\s+web\s+running\s+yes\s+192\.0\.2\.254/24\s+0", out, re.M), out
    assert re.search(r"^\s+uplink\.wan0\.rx_bytes\s+1234$", out, re.M), out

    status, out, _ = run_cli(capsys, "gateway", "status", "b1", "--json")
    assert status == 0 and json.loads(out) == doc


@pytest.mark.parametrize(("kw", "says"), [
    ({"connected": False, "sent_generation": None, "applied_generation": None, "telemetry_at": None,
      "counters": {}, "apps": {}, "vms": {}}, ["channel down"]),
    ({"last_apply_error": "nft: syntax error"}, ["last apply failed: nft: syntax error"]),
    ({"applied_generation": 4}, ["generation 5 sent, 4 applied"]),
    ({"apps": {"web": AppLive(state="exited", restarts=3, error="oom")}}, ["apps not running: web (exited)"]),
    ({"vms": {"vm1": VmLive(state="absent")}, "applied_generation": 3, "last_apply_error": "boom"},
     ["generation 5 sent, 3 applied", "last apply failed: boom", "VMs not running: vm1 (absent)"]),
])
def test_an_unhealthy_gateway_says_why_first(api, capsys, kw, says):
    api["/gateways/b1/status"] = status_doc(**kw)
    status, out, _ = run_cli(capsys, "gateway", "status", "b1")
    first = out.splitlines()[0]
    assert status == 0 and first.startswith("b1: NOT OK: "), out
    for reason in says:
        assert reason in first, (reason, first)


def test_gateway_show_reads_as_sections_and_json_for_scripts(api, capsys):
    api["/gateways/b1"] = GATEWAY
    api["/gateways/b1/status"] = status_doc(connected=False, sent_generation=None, applied_generation=None)
    status, out, _ = run_cli(capsys, "gateway", "show", "b1")
    assert status == 0 and out.splitlines()[0] == "b1: NOT OK: channel down"
    assert re.search(r"^\s+system IP\s+198\.19\.255\.1$", out, re.M), out
    assert re.search(r"^\s+wan0\s+eth0\s+static\s+198\.18\.1\.2/24\s+198\.18\.1\.1", out, re.M), out
    assert re.search(r"^\s+corp\s+lan0, lan1$", out, re.M), out
    status, out, _ = run_cli(capsys, "gateway", "show", "b1", "--json")
    assert status == 0 and json.loads(out) == GATEWAY


def test_lists_take_json(api, capsys):
    api["/enterprises"] = {"enterprises": [{"name": "acme", "transport": "esp", "ipsec": None, "psk_set": True,
                                            "generation": 4, "created": "2030-01-01T12:00:00+00:00"}]}
    api["/enterprises/acme/gateways"] = {"gateways": [GATEWAY]}
    for argv, path in ((("enterprise", "list"), "/enterprises"),
                       (("gateway", "list", "acme"), "/enterprises/acme/gateways")):
        status, out, _ = run_cli(capsys, *argv, "--json")
        assert status == 0 and json.loads(out) == api[path]
        status, out, _ = run_cli(capsys, *argv)
        assert status == 0 and out.startswith("NAME")


def test_gateway_supplied_text_never_reaches_the_terminal_raw(api, capsys):
    api["/gateways/b1/status"] = status_doc(
        last_apply_error=EVIL, counters={f"x{EVIL}": EVIL},
        apps={f"w{EVIL}": AppLive(state=EVIL, error=EVIL, address=EVIL)}, vms={"vm1": VmLive(state=EVIL)})
    app = {"name": "web", "subnet": "corp", "address": "192.0.2.254", "image": "acme/web:1",
           "live": {"state": EVIL, "restarts": 1, "error": EVIL, "memory_mb": None, "cpu_percent": None}}
    api["/gateways/b1/apps"] = {"apps": [app]}
    api["/gateways/b1/vms"] = {"vms": [{"name": "vm1", "subnet": "corp", "address": "192.0.2.253",
                                        "live": {"state": EVIL, "restarts": 0, "error": EVIL}}]}
    api["/gateways/b1/policy/counters"] = {"gateway": "b1", "connected": True, "generation": 5, "ts": 1.0,
                                           "counters": {f"acl.{EVIL}": {"packets": 1, "bytes": 2}}}
    api["/gateways/b1"] = GATEWAY
    for argv in (("gateway", "status", "b1"), ("gateway", "status", "b1", "--json"), ("gateway", "show", "b1"),
                 ("app", "list", "b1"), ("vm", "list", "b1"), ("policy", "counters", "b1"),
                 ("policy", "counters", "b1", "--json")):
        status, out, err = run_cli(capsys, *argv)
        assert status == 0, (argv, err)
        assert not RAW.search(out.replace("\n", "")), (argv, out)
        assert "FAKE: all good" not in [line.strip() for line in out.splitlines()], (argv, out)
        assert "\\x1b[2J" in out or "\\u001b[2J" in out, (argv, out)


def test_an_api_error_message_is_escaped_too(monkeypatch, capsys):
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "nsgc_test")

    def call(self, method, path, body=None, **kw):
        raise admin_cli._api_error(400, "Bad Request", json.dumps(
            {"error": {"code": "invalid", "message": EVIL, "field": "x"}}).encode())

    monkeypatch.setattr(admin_cli.Client, "call", call)
    status, _, err = run_cli(capsys, "gateway", "status", "b1")
    assert status == 2 and not RAW.search(err.rstrip("\n")), err


@pytest.mark.parametrize("main", [admin_cli.main, controller_cli.main])
@pytest.mark.parametrize(("argv", "usage"), [
    (["gateway", "status", "b1", "--jsn"], "usage: nsg-controller gateway status"),
    (["enterprise", "list", "--bogus"], "usage: nsg-controller enterprise list"),
    (["token", "create", "x", "--db", "d", "--expire-in", "1h"], "usage: nsg-controller token create"),
    (["gateway", "--wat", "list", "acme"], "usage: nsg-controller gateway"),
])
def test_a_mistyped_flag_shows_the_subcommands_usage(main, argv, usage, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(usage), err
    assert "unrecognized arguments" in err


def test_render_flags_too(capsys):
    with pytest.raises(SystemExit):
        controller_cli.main(["render", "--enterprise", "e.json", "--out", "o", "--outt", "p"])
    assert capsys.readouterr().err.startswith("usage: nsg-controller render")

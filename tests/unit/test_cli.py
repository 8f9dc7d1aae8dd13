"""`nsg` command line: check-config runs the checks `nsg run` runs before it starts; `nsg show`
lists its tables; a mistyped option gets the usage of the command it was given to."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives import serialization

from nsg.cli import main
from tests.unit.conftest import base_doc
from tests.unit.ike.simnet import issue, make_ca


def cert_config(tmp_path, key_mode: int):
    ca = make_ca()
    key, cert = issue(ca, "198.19.255.1")
    files = {
        "ca": ca[1].public_bytes(serialization.Encoding.PEM),
        "cert": cert.public_bytes(serialization.Encoding.PEM),
        "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    os.chmod(tmp_path / "key.pem", key_mode)
    doc = base_doc()
    doc["transport"] = "esp"
    doc["ipsec"] = {"auth": "certificate", **{k: str(tmp_path / f"{k}.pem") for k in files}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_check_config_refuses_what_run_refuses(tmp_path, capsys):
    cfg = cert_config(tmp_path, 0o644)
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "readable by others" in err and "0600" in err, err
    # and the daemon's own start-up check says the same about the same file
    from nsg.model import load_config
    from nsg.tunnels import TunnelConfigError, load_credentials

    with pytest.raises(TunnelConfigError, match="readable by others"):
        load_credentials(load_config(cfg).ipsec)


def test_check_config_passes_a_usable_config(tmp_path, capsys):
    cfg = cert_config(tmp_path, 0o600)
    assert main(["check-config", str(cfg)]) == 0
    assert ": ok (system ip 198.19.255.1" in capsys.readouterr().out


def test_check_config_names_unreadable_credentials(tmp_path, capsys):
    cfg = cert_config(tmp_path, 0o600)
    (tmp_path / "ca.pem").write_text("not a certificate")
    assert main(["check-config", str(cfg)]) == 2
    assert "ipsec credentials" in capsys.readouterr().err


def test_show_without_a_table_lists_the_tables(capsys):
    assert main(["show"]) == 0
    out = capsys.readouterr().out
    assert "evpn" in out and "EVPN routes" in out


@pytest.mark.parametrize("argv, usage", [
    (["status", "--jsno"], "usage: nsg status"),
    (["check-config", "c.json", "--verbose"], "usage: nsg check-config"),
    (["show", "evpn", "--jsno"], "usage: nsg show evpn"),
    (["ipsec", "rekey", "b2", "--child"], "usage: nsg ipsec rekey"),
])
def test_a_mistyped_option_gets_its_commands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith(usage), err
    assert f"unrecognized arguments: {argv[-1]}" in err


def test_evpn_table_marks_refused_and_frozen_routes():
    from nsg.cli import _evpn_table

    res = {"peers": {"198.19.255.254": {"state": "Established"}}, "local": [],
           "received": [{"peer": "198.19.255.254", "type": 5, "prefix": "0.0.0.0/1", "gateway_ip": "198.19.0.11",
                         "vtep": "198.19.255.1", "best": False, "refused": "not in evpn.remote_prefixes"},
                        {"peer": "198.19.255.254", "type": 2, "vni": 100, "mac": "02:00:00:00:00:07",
                         "vtep": "198.19.255.2", "seq": 3, "best": True, "frozen": True}],
           "frozen_macs": [{"vni": 100, "mac": "02:00:00:00:00:07", "at": "198.19.255.2", "moves": 5,
                            "remaining_s": 170}]}
    text = _evpn_table(res)
    assert "refused: not in evpn.remote_prefixes" in text
    assert "* frozen" in text
    assert "frozen (duplicate MAC): vni 100 02:00:00:00:00:07 at 198.19.255.2, 5 moves, 170 s left" in text

"""`nsg upgrade FILE`, `nsg upgrade status [--json]`, `nsg upgrade settle`, through the parser nsg uses."""

from __future__ import annotations

import json

from nsg.upgrade.cli import main


def paths(tbox) -> list[str]:
    b = tbox.box
    return ["--state-dir", str(b.state_dir), "--grubenv", str(b.grubenv), "--keys-dir", str(b.keys_dir),
            "--release-file", str(b.release), "--partlabel-dir", str(b.partlabel_dir), "--cmdline", str(b.cmdline)]


def test_install_reboots_unless_told_not_to(tbox, capsys):
    reboots = []
    assert main(["upgrade", str(tbox.bundle(version="1.3.0")), "--commit-after", "90", *paths(tbox)],
                reboot=lambda: reboots.append(1)) == 0
    out = capsys.readouterr().out
    assert "upgrade 1.2.0 -> 1.3.0: slot b" in out and "within 90 s" in out and out.rstrip().endswith("rebooting")
    assert reboots == [1]


def test_status_text_and_json(tbox, capsys):
    assert main(["upgrade", str(tbox.bundle(version="1.3.0")), "--no-reboot", *paths(tbox)]) == 0
    assert main(["upgrade", str(tbox.bundle("x.nsgb", key=tbox.other_key)), "--no-reboot", *paths(tbox)]) == 1
    err = capsys.readouterr().err
    assert "nsg: upgrade: bundle signature does not verify" in err and "[bundle: bad-signature]" in err
    assert main(["upgrade", "status", *paths(tbox)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "slot a: 1.2.0 (booted, committed)"
    assert out[1] == "slot b: 1.3.0 (armed: boots once at the next reboot)"
    assert out[2] == "state: armed"
    assert out[3].startswith("last attempt: 1.2.0 (slot a) -> 1.3.0 (slot b), armed")
    assert out[4] == "refused: bad-signature 1"
    assert main(["upgrade", "status", "--json", *paths(tbox)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "armed" and doc["armed_slot"] == "b" and doc["running_version"] == "1.2.0"
    assert doc["last_attempt"]["target_version"] == "1.3.0" and doc["refused"] == {"bad-signature": 1}
    assert doc["last_refusal"]["fault"] == "bundle"


def test_usage_and_box_errors(tbox, capsys):
    assert main(["upgrade", "some.nsgb", "--json", *paths(tbox)]) == 2
    assert "--json goes with status" in capsys.readouterr().err
    assert main(["upgrade", str(tbox.root / "missing.nsgb"), *paths(tbox)]) == 1
    assert "cannot open bundle" in capsys.readouterr().err
    tbox.box.cmdline.write_text("root=/dev/sda2 ro\n")
    assert main(["upgrade", "status", *paths(tbox)]) == 1
    assert "has no nsg.slot=a|b" in capsys.readouterr().err


def test_settle_with_nothing_pending(tbox, capsys):
    assert main(["upgrade", "settle", *paths(tbox)]) == 0
    assert capsys.readouterr().out.strip() == "committed: nothing to do"

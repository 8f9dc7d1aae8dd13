"""`nsg-controller route-reflector --owners FILE`: a bad view is refused at start with the file and the
field named; a running reflector reads the file again when it changes or on SIGHUP, refuses a bad
one and keeps the view it had; without --owners it warns that routes are not checked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.cli import main

ASN = 65000
GOOD = {"asn": ASN, "clients": {"127.0.0.2": {"vnis": [100]}, "127.0.0.3": {"vnis": [100]}}}


def argv(*extra: str) -> list[str]:
    return ["route-reflector", "--listen", "127.0.0.1:0", "--asn", str(ASN), "--router-id", "198.19.255.254", *extra]


@pytest.mark.parametrize(("doc", "words"), [
    ({**GOOD, "asn": 65001}, "the view is for AS 65001, --asn is 65000"),
    ({"asn": ASN, "clients": {"127.0.0.2": {"vnis": [0]}}}, "clients.127.0.0.2.vnis: VNI 0 is outside"),
    ("{", "Invalid JSON"),
])
def test_a_bad_view_is_refused_at_start(tmp_path, capsys, doc, words):
    path = tmp_path / "owners.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert main(argv("--owners", str(path))) == 2
    err = capsys.readouterr().err
    assert str(path) in err and words in err, err


def test_limits_out_of_range_are_refused(capsys):
    assert main(argv("--min-hold-time", "0")) == 2
    assert "--min-hold-time" in capsys.readouterr().err


def _wait_log(log: Path, text: str, after: int = 0, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content[after:]:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the reflector's log:\n{log.read_text()}")


def test_the_view_is_read_again_when_the_file_changes_or_on_sighup(tmp_path):
    path, log = tmp_path / "owners.json", tmp_path / "rr.log"
    path.write_text(json.dumps(GOOD))
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "controller.cli", *argv("--owners", str(path))],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        mark = len(log.read_text())
        path.write_text('{"asn": 65000, "clients": {"127.0.0.2": {"vnis": ["x"]}}}')
        _wait_log(log, "view refused, keeping the previous one", mark)
        assert "clients.127.0.0.2.vnis" in log.read_text()
        mark = len(log.read_text())
        path.write_text(json.dumps({"asn": ASN, "clients": {"127.0.0.2": {"vnis": [100]}}}))
        _wait_log(log, "view loaded from", mark)
        assert "1 clients" in log.read_text()[mark:]
        mark = len(log.read_text())
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(log, "view loaded from", mark, timeout=3)
    finally:
        proc.terminate()
        proc.wait(5)


def test_without_owners_it_warns_that_nothing_is_checked(tmp_path):
    log = tmp_path / "rr.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "controller.cli", *argv("--client", "127.0.0.2")],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        _wait_log(log, "routes are NOT checked")
    finally:
        proc.terminate()
        proc.wait(5)

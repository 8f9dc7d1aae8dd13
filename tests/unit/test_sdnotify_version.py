"""nsg.sdnotify (what nsg.service's Type=notify and WatchdogSec rely on) and `nsg version --json`."""

from __future__ import annotations

import json
import os
import socket

from nsg import __version__, sdnotify
from nsg.cli import main


def test_notify_sends_one_datagram(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1")
        assert s.recv(100) == b"READY=1"


def test_notify_outside_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert not sdnotify.notify("WATCHDOG=1")


def test_watchdog_interval_is_half_the_timeout_for_this_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None


def test_version_json_carries_the_image_manifest(tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"image": {"version": "9.9.9"}, "packages": {"systemd": "252"}}))
    assert main(["version", "--json", "--manifest", str(manifest)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == __version__ and doc["manifest"]["packages"] == {"systemd": "252"}
    assert main(["version", "--json", "--manifest", str(tmp_path / "absent.json")]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"] is None

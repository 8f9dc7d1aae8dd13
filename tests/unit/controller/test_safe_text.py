"""Issue 23 section 3: text a gateway supplies never reaches the operator's terminal or the controller's log
with its control characters raw: an escape sequence (clear the screen, set the window title), a carriage
return or newline (a forged line), a bidi override. One function does it (controller/safe_text.py), used by
every CLI view and every log line that carries what a gateway sent."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from controller import admin_cli
from controller.safe_text import safe
from nsg.channel import wire
from nsg.channel.client import ChannelClient
from tests.unit.channel.test_channel import client_ctx, pki, start, until  # noqa: F401 - pki is a fixture

EVIL = "\x1b[2J\x1b]0;owned\x07\r\nFAKE: all good\u202e\x9b\u2028"
RAW = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.mark.parametrize(("text", "shown"), [
    ("plain, ünïcode and 中文 stay", "plain, ünïcode and 中文 stay"),
    ("a\x1b[31mb", "a\\x1b[31mb"),
    ("line\nforged\rover\ttab", "line\\nforged\\rover\\ttab"),
    ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),  # C0, DEL, C1 (NEL, CSI)
    ("\u202eevil\u2066\u200f", "\\u202eevil\\u2066\\u200f"),  # bidi overrides, isolates, marks
    ("\u2028\u2029", "\\u2028\\u2029"),  # line and paragraph separators
    ("\ud800", "\\ud800"),  # a lone surrogate
    (None, "-"),
    (42, "42"),
])
def test_safe_shows_every_control_as_an_escape(text, shown):
    assert safe(text) == shown


def test_safe_cuts_long_text_before_and_after_escaping():
    assert safe("x" * 10, 4) == "xxxx..."
    assert safe("\n" * 10, 4) == "\\n\\n..."
    assert len(safe("y" * 10_000_000, 100)) == 103


@pytest.fixture
def api(monkeypatch):
    answers: dict[str, object] = {}
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "nsgc_test")

    def call(self, method, path, body=None, **kw):
        return answers[path]

    monkeypatch.setattr(admin_cli.Client, "call", call)
    return answers


def test_gateway_supplied_text_in_every_view_is_escaped(api, capsys):
    app = {"name": "web", "subnet": "corp", "address": "192.0.2.254", "image": "acme/web:1",
           "live": {"state": EVIL, "restarts": 1, "error": EVIL, "memory_mb": None, "cpu_percent": None}}
    api["/gateways/b1/apps"] = {"apps": [app]}
    api["/gateways/b1/policy/counters"] = {"gateway": "b1", "connected": True, "generation": 5, "ts": 1.0,
                                           "counters": {f"acl.{EVIL}": {"packets": 1, "bytes": 2}}}
    event = {"gateway": "b1", "ts": 1.0, "source": "gateway", "reason": "duplicate-mac", "count": 2, "message": EVIL}
    api["/security-events"] = {"counters": {"b1": {"duplicate-mac": 2}}, "events": [event]}
    api["/security-events?gateway=b1"] = api["/security-events"]
    api["/gateways/b1/status"] = {"name": "b1", "connected": True, "generation": 1, "counters": {EVIL: EVIL},
                                  "security": {"counters": {EVIL: 1}, "events": [event]}}
    shown = {}
    for argv in (("app", "list", "b1"), ("policy", "counters", "b1"), ("security", "events"),
                 ("security", "events", "b1"), ("gateway", "status", "b1")):
        status = admin_cli.main(list(argv))
        out, err = capsys.readouterr()
        shown[argv] = out
        assert status == 0, (argv, err)
        assert not RAW.search(out.replace("\n", "")), (argv, out)
        assert "FAKE: all good" not in [line.strip() for line in out.splitlines()], (argv, out)
        assert "\\x1b[2J" in out, (argv, out)
    assert re.search(r"^\s+b1\s+duplicate-mac\s+2$", shown[("security", "events")], re.M), shown
    assert re.search(r"^\s+Security events$|^Security events$", shown[("gateway", "status", "b1")], re.M)


def test_gateway_supplied_text_in_log_lines_is_escaped(pki, caplog):  # noqa: F811
    """A gateway's error frame, an apply error, a rollback reason, an app's telemetry, a security alert: each
    reaches the log as one line, its controls shown as escapes."""
    configs = {"NSG-1": (3, {"schema_version": 1})}

    async def on_config(msg):
        return wire.ApplyResult(generation=msg.generation, ok=False, error=EVIL, running=0)

    async def main():
        from controller.api_models import AppLive, _live_of
        from controller.channel_server import ChannelHub

        hub = ChannelHub(configs.get)
        runner, port = await start(hub, pki)
        client = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: client_ctx(pki), "NSG-1", on_config,
                               lambda: 0, backoff=(0.05, 0.2))
        task = asyncio.create_task(client.run())
        try:
            await until(lambda: "NSG-1" in hub.sessions and len(hub.sessions["NSG-1"].results) == 1)
            await client.send(wire.Error(code="x", message=EVIL))
            await client.send(wire.Event(ts=1.0, kind="security", detail={"reason": "port-security",
                                                                          "message": EVIL}))
            await client._send(wire.ApplyResult(generation=3, ok=False, rolled_back=True, running=0, error=EVIL))
            await until(lambda: "NSG-1" in hub.failed)
            await until(lambda: any("gateway says" in r.getMessage() for r in caplog.records))
            _live_of({f"app.w{EVIL}.state": 1}, "app", AppLive)  # what the API reads from telemetry
        finally:
            task.cancel()
            await runner.cleanup()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    ours = [r for r in caplog.records if r.name.startswith("controller")]
    kinds = {"gateway says", "gateway applied", "rolled a generation back", "security event", "unusable"}
    assert {k for k in kinds if any(k in r.getMessage() for r in ours)} == kinds
    for record in ours:
        texts = [record.getMessage(), *(str(v) for v in getattr(record, "fields", {}).values())]
        for text in texts:
            assert not RAW.search(text), (record.getMessage(), text)

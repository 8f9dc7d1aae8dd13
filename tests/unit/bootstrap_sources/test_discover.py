"""discover(): fixed source order, first success wins, failures are counted and skipped."""

from __future__ import annotations

import asyncio

import pytest

from bootstrap.sources import (
    SOURCE_ORDER,
    BootstrapServer,
    DiscoveryContext,
    DiscoveryStats,
    LocalDiscoveryError,
    RemoteProtocolError,
    discover,
    order_sources,
    standard_sources,
)
from bootstrap.sources.default import DEFAULT_BOOTSTRAP_URI, DefaultSource


class Fake:
    def __init__(self, name: str, result=(), calls: list | None = None, delay: float = 0.0):
        self.name = name
        self.result = result
        self.calls = calls if calls is not None else []
        self.delay = delay

    async def discover(self, ctx):
        self.calls.append(self.name)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.result, BaseException):
            raise self.result
        return [BootstrapServer(u, self.name) for u in self.result]


def run(sources, **kw):
    stats = DiscoveryStats()
    return asyncio.run(discover(sources, DiscoveryContext(), stats=stats, **kw)), stats


def test_order_is_fixed_whatever_order_the_caller_gives():
    calls: list[str] = []
    names = [*reversed(SOURCE_ORDER), "custom"]
    got, _ = run([Fake(n, calls=calls) for n in names])
    assert got == [] and calls == ["file", "dhcp", "dns", "mdns", "imds", "custom", "default"]
    assert [s.name for s in order_sources([Fake("custom"), Fake("file")])] == ["file", "custom"]


def test_first_source_with_servers_wins():
    calls: list[str] = []
    got, stats = run([Fake("file", calls=calls), Fake("dhcp", ["https://a.example"], calls),
                      Fake("default", ["https://d.example"], calls)])
    assert [s.uri for s in got] == ["https://a.example"] and calls == ["file", "dhcp"]
    assert stats.empty["file"] == 1 and stats.found["dhcp"] == 1 and stats.attempts["default"] == 0


def test_failures_are_counted_and_the_next_source_is_tried(caplog):
    got, stats = run([
        Fake("file", RemoteProtocolError("bad JSON")),
        Fake("dhcp", LocalDiscoveryError("no busybox")),
        Fake("dns", OSError("network unreachable")),
        Fake("mdns", ["https://m.example"]),
    ])
    assert [s.uri for s in got] == ["https://m.example"]
    assert dict(stats.failures) == {"file": 1, "dhcp": 1, "dns": 1}
    assert stats.last_error == {"file": "remote: bad JSON", "dhcp": "local: no busybox",
                                "dns": "local: network unreachable"}
    assert "remote fault" in caplog.text


def test_a_hanging_source_is_cut_off():
    got, stats = run([Fake("mdns", delay=5), Fake("default", ["https://d.example"])], source_timeout=0.05)
    assert [s.uri for s in got] == ["https://d.example"] and stats.failures["mdns"] == 1


def test_collect_all_merges_in_order_without_duplicates():
    got, stats = run([Fake("dhcp", ["https://a.example", "https://b.example"]),
                      Fake("dns", ["https://b.example"]), Fake("default", ["https://d.example"])],
                     collect_all=True)
    assert [(s.uri, s.source) for s in got] == [("https://a.example", "dhcp"), ("https://b.example", "dhcp"),
                                                ("https://d.example", "default")]
    assert stats.empty["dns"] == 1  # only duplicates: nothing new


def test_bugs_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run([Fake("file", ZeroDivisionError())])


def test_default_source_and_standard_set():
    got, _ = run([DefaultSource()])
    assert [(s.uri, s.source, s.trust_anchor_der) for s in got] == [(DEFAULT_BOOTSTRAP_URI, "default", None)]
    with pytest.raises(LocalDiscoveryError):
        DefaultSource("http://insecure.example")
    names = [s.name for s in standard_sources(interface="wan0", imds_url="http://127.0.0.1:9")]
    assert names == list(SOURCE_ORDER)
    assert [s.name for s in standard_sources(use_mdns=False)] == ["file", "default"]

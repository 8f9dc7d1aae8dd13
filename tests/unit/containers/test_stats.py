"""containers.stats: the engine's stats documents (cgroup v1 and v2 shapes) and the CPU rate."""

from __future__ import annotations

from containers.stats import Sample, cpu_percent, parse


def test_v1_leaves_the_page_cache_out():
    doc = {"memory_stats": {"usage": 10_000_000, "stats": {"total_inactive_file": 4_000_000, "cache": 5_000_000}},
           "cpu_stats": {"cpu_usage": {"total_usage": 123_456_789}}}
    assert parse(doc) == Sample(6_000_000, 123_456_789)


def test_v2_uses_inactive_file():
    doc = {"memory_stats": {"usage": 3_000_000, "stats": {"inactive_file": 1_000_000}},
           "cpu_stats": {"cpu_usage": {"total_usage": 5}}}
    assert parse(doc) == Sample(2_000_000, 5)


def test_missing_or_nonsense_fields_are_none():
    assert parse({}) == Sample(None, None)
    bad = {"memory_stats": {"usage": -1}, "cpu_stats": {"cpu_usage": {"total_usage": "x"}}}
    assert parse(bad) == Sample(None, None)
    # a cache figure larger than the usage is not subtracted
    assert parse({"memory_stats": {"usage": 100, "stats": {"cache": 500}}}).memory_bytes == 100


def test_cpu_percent_is_of_one_core():
    assert cpu_percent((10.0, 0), (12.0, 1_000_000_000)) == 50.0
    assert cpu_percent((10.0, 0), (11.0, 2_000_000_000)) == 200.0  # two cores busy
    assert cpu_percent((10.0, 5), (10.0, 9)) is None  # no time passed
    assert cpu_percent((10.0, 9), (11.0, 5)) is None  # the counter went back: a new container

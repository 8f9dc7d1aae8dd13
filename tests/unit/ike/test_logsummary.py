"""LogSummariser: log lines caused by remote input are rate-limited; the first few go through,
then one summary per window says how many there were and from how many addresses. Time is
passed in (sans-IO), so these tests drive it by hand."""

from __future__ import annotations

from ipsec.logsummary import LogSummariser

WHAT = "refused IKE_SA_INIT"


def flood(s: LogSummariser, n: int, start: float, spacing: float, addresses: int, reason: str | None = None):
    """n events, one every ``spacing`` seconds, from ``addresses`` distinct sources; returns
    (how many the caller may log one by one, summaries handed out on the way)."""
    let_through, summaries = 0, []
    for i in range(n):
        now = start + i * spacing
        summaries += s.due(now)
        if s.note(WHAT, f"203.0.113.{i % addresses}", now, reason=reason):
            let_through += 1
    return let_through, summaries


def test_first_few_then_one_summary_per_window():
    s = LogSummariser(window=10.0, burst=3)
    through, summaries = flood(s, 1203, 0.0, 0.005, 37)  # 1,203 events within 6 s
    assert through == 3 and summaries == []
    assert s.next_due() == 10.0
    assert s.due(9.99) == []
    [summary] = s.due(10.0)
    assert summary.text() == "1,203 refused IKE_SA_INIT from 37 addresses in the last 10 s"
    assert (summary.count, summary.addresses, summary.logged) == (1203, 37, 3)
    assert s.due(20.0) == [] and s.next_due() is None


def test_a_sustained_flood_gives_one_line_per_window():
    s = LogSummariser(window=10.0, burst=3)
    through, summaries = flood(s, 6000, 0.0, 0.01, 200)  # 60 s at 100 per second
    summaries += s.due(60.0)
    # 3 one by one at the start, then only summaries: one per 10 s
    assert through == 3
    assert len(summaries) == 6 and sum(x.count for x in summaries) == 6000
    assert all(x.addresses == 200 for x in summaries)


def test_quiet_window_restores_the_first_few():
    s = LogSummariser(window=10.0, burst=3)
    flood(s, 100, 0.0, 0.01, 5)
    assert len(s.due(10.0)) == 1
    # a whole window without events: the next event is news again
    assert s.note(WHAT, "192.0.2.1", 25.0)
    # while a window that had a summary was followed at once by more events, it stays summarised
    s2 = LogSummariser(window=10.0, burst=3)
    flood(s2, 100, 0.0, 0.01, 5)
    assert not s2.note(WHAT, "192.0.2.1", 12.0)


def test_no_summary_when_nothing_was_held_back():
    s = LogSummariser(window=10.0, burst=3)
    through, _ = flood(s, 3, 0.0, 1.0, 3)
    assert through == 3
    assert s.due(100.0) == []


def test_kinds_are_counted_apart_and_reasons_listed():
    s = LogSummariser(window=10.0, burst=1)
    for i in range(50):
        s.note(WHAT, f"198.51.100.{i}", i * 0.1, reason="NO_PROPOSAL_CHOSEN" if i % 5 else "INVALID_KE_PAYLOAD")
    s.note("failed IKE_AUTH", "192.0.2.7", 1.0)
    s.note("failed IKE_AUTH", "192.0.2.7", 2.0)
    out = {x.what: x for x in s.due(20.0)}
    assert set(out) == {WHAT, "failed IKE_AUTH"}
    assert out[WHAT].text() == ("50 refused IKE_SA_INIT from 50 addresses in the last 10 s "
                                "(NO_PROPOSAL_CHOSEN 40, INVALID_KE_PAYLOAD 10)")
    assert out["failed IKE_AUTH"].text() == "2 failed IKE_AUTH from 1 address in the last 10 s"


def test_addresses_are_bounded():
    s = LogSummariser(window=10.0, burst=0, max_addresses=100)
    for i in range(1000):
        s.note(WHAT, f"10.{i >> 8}.{i & 255}.1", i * 0.001)
    [summary] = s.due(10.0)
    assert summary.text() == "1,000 refused IKE_SA_INIT from at least 100 addresses in the last 10 s"

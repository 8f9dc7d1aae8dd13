"""Commit-confirm as a table of events (issue 13 section 3): which config a box keeps, and when it goes back."""

from __future__ import annotations

import pytest

from nsg.confirm import CommitConfirm
from nsg.model import parse_config


def cfg(generation: int):
    return parse_config({"schema_version": 1, "generation": generation, "system_ip": "198.19.255.1",
                         "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "dhcp"}]})


@pytest.mark.parametrize(("events", "expect"), [
    # confirmed within the window: nothing to undo
    ([("start", 2, 1, 0.0), ("confirm", 2), ("due", 100.0)], {"due": None, "confirmed": 1, "rolled_back": 0}),
    # no confirm: due at the deadline, not before
    ([("start", 2, 1, 0.0), ("due", 59.9)], {"due": None}),
    ([("start", 2, 1, 0.0), ("due", 60.0)], {"due": (2, 1)}),
    # a confirm for another generation commits nothing
    ([("start", 2, 1, 0.0), ("confirm", 1), ("due", 60.0)], {"due": (2, 1), "confirmed": 0}),
    # a second trial on top of an unconfirmed one falls back to the last *confirmed* generation, with a new deadline
    ([("start", 2, 1, 0.0), ("start", 3, 2, 30.0), ("due", 60.0)], {"due": None}),
    ([("start", 2, 1, 0.0), ("start", 3, 2, 30.0), ("due", 90.0)], {"due": (3, 1)}),
    # the window can be set per push
    ([("start", 2, 1, 0.0, 10.0), ("due", 10.0)], {"due": (2, 1)}),
])
def test_trials(events, expect):
    cc = CommitConfirm()
    configs = {g: cfg(g) for g in (1, 2, 3)}
    due = None
    for ev in events:
        if ev[0] == "start":
            cc.start(ev[1], configs[ev[2]], ev[2], ev[3], *(ev[4:] or ()))
        elif ev[0] == "confirm":
            cc.confirm(ev[1])
        else:
            due = cc.due(ev[1])
    assert (None if due is None else (due.generation, due.previous_generation)) == expect["due"]
    if due is not None:
        assert due.previous == configs[expect["due"][1]]
    for k in ("confirmed", "rolled_back"):
        if k in expect:
            assert cc.counters[k] == expect[k]


def test_a_rolled_back_generation_is_refused_and_reported_once():
    cc = CommitConfirm()
    trial = cc.start(7, cfg(6), 6, 0.0)
    rb = cc.rolled_back(trial, "no confirmation (the channel is down)", at=123.0)
    assert (rb.generation, rb.restored, cc.trial) == (7, 6, None)
    assert cc.unreported == rb and cc.last_rollback == rb
    assert cc.refuses(7) and not cc.refuses(8)
    last = cc.status(0.0).last_rollback
    assert last is not None and last.model_dump() == {"generation": 7, "restored": 6, "reason": rb.reason, "at": 123.0}
    assert cc.counters == {"trials": 1, "confirmed": 0, "rolled_back": 1, "refused_again": 1}


def test_a_newer_confirmed_generation_clears_the_rollback():
    cc = CommitConfirm()
    cc.rolled_back(cc.start(7, cfg(6), 6, 0.0), "cut off")
    cc.start(8, cfg(6), 6, 1.0)
    assert cc.confirm(8) and cc.last_rollback is None and cc.counters["rolled_back"] == 1

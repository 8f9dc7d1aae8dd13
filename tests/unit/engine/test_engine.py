"""The desired-state engine with fake subsystems: the declared order, "no changes" on a repeat,
force on resync, rollback in reverse order on a failure (tailscale router_linux_test.go style)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from nsg.engine import Changes, Engine, EngineResult, Event, SubsystemError
from nsg.subsystems.fakes import FakeSubsystem

NAMES = ("a", "b", "c", "d")


@dataclass(frozen=True)
class State:
    a: int = 0
    b: int = 0
    c: int = 0
    d: int = 0


def engine(fail: dict[str, set] | None = None) -> tuple[Engine, list, dict[str, FakeSubsystem]]:
    journal: list = []
    subs = {n: FakeSubsystem(n, journal, (fail or {}).get(n, ())) for n in NAMES}
    return Engine([subs[n] for n in NAMES]), journal, subs


def run(coro):
    return asyncio.run(coro)


def test_parts_are_set_in_the_declared_order():
    eng, journal, _ = engine()
    result = run(eng.set(State(1, 2, 3, 4)))
    assert journal == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    assert result.ok and [n for n, _ in result.changes] == list(NAMES) and result.skipped == ()


def test_the_same_state_again_sets_nothing_and_reports_no_changes():
    eng, journal, _ = engine()
    run(eng.set(State(1, 2, 3, 4)))
    journal.clear()
    result = run(eng.set(State(1, 2, 3, 4)))
    assert journal == [] and result.ok and result.skipped == NAMES and result.changes == ()


@pytest.mark.parametrize(("new", "called"), [
    (State(1, 2, 3, 4), []),
    (State(1, 9, 3, 4), [("b", 9)]),
    (State(7, 2, 3, 8), [("a", 7), ("d", 8)]),
])
def test_only_parts_that_differ_are_set(new, called):
    eng, journal, _ = engine()
    run(eng.set(State(1, 2, 3, 4)))
    journal.clear()
    run(eng.set(new))
    assert journal == called


def test_force_sets_equal_parts_again_in_order():
    eng, journal, _ = engine()
    run(eng.set(State(1, 2, 3, 4)))
    journal.clear()
    result = run(eng.set(State(1, 2, 3, 4), force=frozenset({"d", "b"})))
    assert journal == [("b", 2), ("d", 4)]
    assert result.skipped == ("a", "c") and result.of("b") == Changes()  # the fake found nothing to do


def test_a_failure_rolls_back_what_this_call_changed_in_reverse_order():
    eng, journal, subs = engine({"c": {30}})
    run(eng.set(State(1, 2, 3, 4)))
    journal.clear()
    result = run(eng.set(State(10, 2, 30, 40)))  # b is equal (skipped), c fails, d is never reached
    assert not result.ok and isinstance(result.error, SubsystemError) and result.error.subsystem == "c"
    assert journal == [("a", 10), ("c", 30), ("c", 3), ("a", 1)]
    assert result.rolled_back == ("c", "a")
    assert {n: s.current for n, s in subs.items()} == {"a": 1, "b": 2, "c": 3, "d": 4}
    journal.clear()
    run(eng.set(State(1, 2, 3, 4)))  # what the engine thinks is set is what is set
    assert journal == []


def test_a_failure_on_the_first_set_leaves_nothing_to_go_back_to():
    eng, journal, _ = engine({"b": {2}})
    result = run(eng.set(State(1, 2, 3, 4)))
    assert not result.ok and result.rolled_back == () and journal == [("a", 1), ("b", 2)]
    journal.clear()
    run(eng.set(State(1, 5, 3, 4)))
    assert journal == [("a", 1), ("b", 5), ("c", 3), ("d", 4)]  # nothing counts as set: all go through


def test_a_forced_part_that_fails_is_not_set_again_as_its_own_rollback():
    eng, journal, subs = engine()
    run(eng.set(State(1, 2, 3, 4)))
    subs["b"].fail_on = {2}
    journal.clear()
    result = run(eng.set(State(1, 2, 3, 4), force=frozenset({"b"})))
    assert not result.ok and journal == [("b", 2)] and result.rolled_back == ()


def test_results_are_frozen_and_names_must_be_unique():
    result = EngineResult()
    with pytest.raises(AttributeError):
        result.error = None  # type: ignore[misc]
    with pytest.raises(ValueError, match="repeat"):
        Engine([FakeSubsystem("a"), FakeSubsystem("a")])


def test_events_are_typed():
    assert Event("lease").kind == "lease"
    with pytest.raises(ValueError, match="unknown event"):
        Event("evnp")

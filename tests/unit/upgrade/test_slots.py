"""The A/B state machine as a table: (GRUB env, booted slot, last attempt) -> state, edits, record."""

from __future__ import annotations

import pytest

from nsg.upgrade.errors import BoxError
from nsg.upgrade.grubenv import GrubEnv
from nsg.upgrade.record import Attempt, Phase, Record
from nsg.upgrade.slots import State, arm, booted_slot, check_installable, commit, report, settle_record, view


def env(slot: str | None = "a", try_: str | None = "") -> GrubEnv:
    e = GrubEnv()
    if slot is not None:
        e = e.set("nsg_slot", slot)
    if try_ is not None:
        e = e.set("nsg_try", try_)
    return e


def attempt(phase: Phase, frm: str = "a", to: str = "b", reason: str = "") -> Attempt:
    return Attempt(from_slot=frm, from_version="1.0.0", target_slot=to, target_version="1.1.0", phase=phase,
                   started=1.0, updated=1.0, commit_after_s=300, reason=reason)


@pytest.mark.parametrize(("slot", "try_", "booted", "last", "running", "state"), [
    ("a", "", "a", None, False, State.COMMITTED),
    ("a", None, "a", None, False, State.COMMITTED),  # no nsg_try at all: the image builder's first env
    ("a", "b", "a", attempt(Phase.ARMED), False, State.ARMED),
    ("a", "b", "a", None, False, State.ARMED),  # armed by hand: still armed
    ("a", "b", "a", attempt(Phase.WRITING), False, State.ARMED),  # power cut after nsg_try, before the record
    ("a", "", "b", attempt(Phase.ARMED), False, State.TRIAL),  # grub.cfg consumed nsg_try and booted b
    ("a", "", "b", attempt(Phase.TRYING), False, State.TRIAL),
    ("a", "b", "b", None, False, State.TRIAL),  # a grub.cfg that did not clear nsg_try: still only a trial
    ("a", "", "a", attempt(Phase.ARMED), False, State.FELL_BACK),  # b never reached userspace
    ("a", "", "a", attempt(Phase.TRYING), False, State.FELL_BACK),  # b crashed before it was healthy
    ("a", "", "a", attempt(Phase.UNHEALTHY), False, State.FELL_BACK),  # b rebooted itself
    ("a", "", "a", attempt(Phase.WRITING), False, State.INTERRUPTED),  # power cut while writing b
    ("a", "", "a", attempt(Phase.WRITING), True, State.COMMITTED),  # ... unless the writer is still at it
    ("a", "", "a", attempt(Phase.FELL_BACK), False, State.COMMITTED),  # already recorded
    ("a", "", "a", attempt(Phase.FAILED), False, State.COMMITTED),
    ("b", "", "b", attempt(Phase.COMMITTED), False, State.COMMITTED),
    ("b", "", "b", attempt(Phase.TRYING), False, State.COMMITTED),  # committed; the record lost the last word
    ("b", "", "b", attempt(Phase.ARMED, frm="b", to="a"), False, State.FELL_BACK),  # the same, from b
])
def test_states(slot, try_, booted, last, running, state):
    assert view(env(slot, try_), booted, last, writer_running=running).state is state


@pytest.mark.parametrize(("e", "why"), [
    (env(None), "nsg_slot=None"),
    (env("c"), "nsg_slot='c'"),
    (env("a", "x"), "nsg_try='x'"),
])
def test_an_env_that_does_not_say_which_slot(e, why):
    with pytest.raises(BoxError, match=why):
        view(e, "a", None)


@pytest.mark.parametrize(("cmdline", "slot"), [
    ("BOOT_IMAGE=/boot/vmlinuz root=PARTLABEL=nsg-root-b ro nsg.slot=b panic=10\n", "b"),
    ("nsg.slot=a", "a"),
    ("nsg.slot=b nsg.slot=a", "a"),  # the last one wins, as for the kernel
])
def test_booted_slot(cmdline, slot):
    assert booted_slot(cmdline) == slot


@pytest.mark.parametrize(("cmdline", "why"), [
    ("root=/dev/sda1 ro", "has no nsg.slot=a|b"),
    ("nsg.slot=c", "nsg.slot=c, not a or b"),
    ("xnsg.slot=a", "has no nsg.slot"),
])
def test_booted_slot_refusals(cmdline, why):
    with pytest.raises(BoxError, match=why):
        booted_slot(cmdline)


def test_edits():
    committed = view(env("a", ""), "a", None)
    assert arm(env("a", ""), committed).as_dict() == {"nsg_slot": "a", "nsg_try": "b"}
    trial = view(env("a", ""), "b", attempt(Phase.TRYING))
    assert trial.inactive == "a"
    with pytest.raises(BoxError, match=r"uncommitted trial of slot b"):
        arm(env("a", ""), trial)
    with pytest.raises(BoxError, match=r"uncommitted trial"):
        check_installable(trial)
    assert commit(env("a", "b"), view(env("a", "b"), "b", None)).as_dict() == {"nsg_slot": "b", "nsg_try": ""}
    with pytest.raises(BoxError, match=r"nothing to commit"):
        commit(env("a", ""), committed)


@pytest.mark.parametrize(("phase", "booted", "slot", "recorded", "reason"), [
    (Phase.ARMED, "a", "a", Phase.FELL_BACK, "never reached userspace"),
    (Phase.TRYING, "a", "a", Phase.FELL_BACK, "booted but stopped"),
    (Phase.UNHEALTHY, "a", "a", Phase.FELL_BACK, "not healthy within 300 s: channel down"),
    (Phase.WRITING, "a", "a", Phase.INTERRUPTED, "stopped part way"),
    (Phase.TRYING, "b", "b", Phase.COMMITTED, ""),
    (Phase.FELL_BACK, "a", "a", None, None),  # final: left alone
])
def test_settle_record(phase, booted, slot, recorded, reason):
    why = "slot b was not healthy within 300 s: channel down"
    last = attempt(phase, reason=why if phase is Phase.UNHEALTHY else "")
    got = settle_record(view(env(slot, ""), booted, last), last, now=5.0)
    if recorded is None:
        assert got is None
    else:
        assert got.phase is recorded and got.updated == 5.0 and reason in got.reason


def test_report_for_the_controller():
    rec = Record(attempt=attempt(Phase.FELL_BACK, reason="x"), slot_versions={"a": "1.0.0", "b": "1.1.0"},
                 refused={"bad-signature": 2})
    rep = report(view(env("a", ""), "a", rec.attempt), rec, "1.0.1")
    doc = rep.model_dump(mode="json")
    assert doc["state"] == "committed" and doc["running_version"] == "1.0.1"
    assert doc["committed_version"] == "1.0.1" and doc["slot_versions"] == {"a": "1.0.1", "b": "1.1.0"}
    assert doc["last_attempt"]["phase"] == "fell-back" and doc["refused"] == {"bad-signature": 2}
    trial = report(view(env("a", ""), "b", None), rec, "1.1.0")
    assert (trial.state, trial.running_version, trial.committed_version) == (State.TRIAL, "1.1.0", "1.0.0")

"""The upgrade agent's decisions (nsg/upgrade/agent.py), by table: what the config's target, the box's
release and slots and the agent's own record make it do; and the report it sends (bounded: it always
fits a channel event)."""

from __future__ import annotations

import typing

import pytest

from nsg.channel import wire
from nsg.model.upgrade import (
    AgentReport,
    AttemptReport,
    RefusalReport,
    UpgradeState,
    UpgradeTarget,
)
from nsg.model.upgrade import BootState as BootStateLiteral
from nsg.model.upgrade import Phase as PhaseLiteral
from nsg.upgrade import agent
from nsg.upgrade.agent import Do, Facts, Outcome, Tried, decide
from nsg.upgrade.record import Attempt, Phase, Record
from nsg.upgrade.slots import State, UpgradeReport

SHA = "ab" * 32
MODEL = "nsg-atom-x86_64"
NOW = 10_000.0


def target(version="1.3.0", retry=0, models=(MODEL,)) -> UpgradeTarget:
    return UpgradeTarget(version=version, retry=retry, commit_after_s=60, bundles=[
        {"model": m, "url": f"https://198.18.0.2:8444/bundles/{SHA}", "sha256": SHA, "size": 1000} for m in models])


def attempt(phase: Phase, to="1.3.0", reason="") -> Attempt:
    return Attempt(from_slot="a", from_version="1.2.0", target_slot="b", target_version=to, phase=phase,
                   started=NOW - 100, updated=NOW - 50, commit_after_s=60, reason=reason)


def box(running="1.2.0", state=State.COMMITTED, last: Attempt | None = None, booted="a") -> Facts:
    committed = booted if state is not State.TRIAL else "a" if booted == "b" else "b"
    rep = UpgradeReport(state=state, booted_slot=booted, committed_slot=committed,
                        armed_slot="b" if state is State.ARMED else None, running_version=running,
                        committed_version=running, slot_versions={booted: running}, last_attempt=last,
                        refused={}, last_refusal=None)
    return Facts(MODEL, running, rep)


def tried(outcome: Outcome, **kw) -> Tried:
    base = {"version": "1.3.0", "retry": 0, "sha256": SHA, "outcome": outcome, "at": NOW - 10}
    return Tried(**{**base, **kw})


CASES = [
    # (what, target, facts, tried) -> (do, action)
    ("a dev tree", target(), "not an A/B appliance: /usr/share/nsg/release.json is missing", None,
     Do.NOTHING, "not-appliance"),
    ("no profile", None, box(), None, Do.NOTHING, "none"),
    ("already there", target(), box(running="1.3.0"), None, Do.NOTHING, "up-to-date"),
    ("there, on trial", target(), box(running="1.3.0", state=State.TRIAL, booted="b"), None, Do.NOTHING, "trial"),
    ("no bundle for this model", target(models=("nsg-aws-x86_64",)), box(), None, Do.NOTHING, "no-bundle"),
    ("another slot on trial", target("1.4.0"), box(running="1.3.0", state=State.TRIAL, booted="b"), None,
     Do.NOTHING, "trial"),
    ("a new target", target(), box(), None, Do.INSTALL, "downloading"),
    ("a new target, an older attempt done", target("1.4.0"), box(last=attempt(Phase.COMMITTED)), None,
     Do.INSTALL, "downloading"),
    ("fell back before (recorded)", target(), box(last=attempt(Phase.FELL_BACK)), None, Do.NOTHING, "held"),
    ("fell back before (not yet recorded)", target(), box(state=State.FELL_BACK, last=attempt(Phase.TRYING)), None,
     Do.NOTHING, "held"),
    ("the write failed", target(), box(last=attempt(Phase.FAILED)), tried(Outcome.STARTED, unfinished=1),
     Do.NOTHING, "held"),
    ("fell back, the operator retries", target(retry=1), box(last=attempt(Phase.FELL_BACK)),
     tried(Outcome.REBOOTING, reboots=1), Do.INSTALL, "downloading"),
    ("fell back at retry 1 too", target(retry=1), box(last=attempt(Phase.FELL_BACK)),
     tried(Outcome.REBOOTING, retry=1, reboots=1), Do.NOTHING, "held"),
    ("refused before", target(), box(), tried(Outcome.REFUSED, reason="wrong model"), Do.NOTHING, "held"),
    ("refused, then retried", target(retry=2), box(), tried(Outcome.REFUSED), Do.INSTALL, "downloading"),
    ("armed, the daemon restarted before the reboot", target(), box(state=State.ARMED, last=attempt(Phase.ARMED)),
     tried(Outcome.ARMED), Do.REBOOT, "rebooting"),
    ("armed, rebooted twice already", target(), box(state=State.ARMED, last=attempt(Phase.ARMED)),
     tried(Outcome.REBOOTING, reboots=2), Do.NOTHING, "held"),
    ("armed by someone else (no record of ours)", target(), box(state=State.ARMED, last=attempt(Phase.ARMED)), None,
     Do.INSTALL, "downloading"),
    ("armed once, disarmed by someone", target(), box(last=attempt(Phase.COMMITTED, to="1.2.0")),
     tried(Outcome.ARMED), Do.NOTHING, "held"),
    ("download failed, not due", target(), box(), tried(Outcome.DOWNLOAD_FAILED, failures=1, retry_at=NOW + 30),
     Do.NOTHING, "retry-wait"),
    ("download failed, due", target(), box(), tried(Outcome.DOWNLOAD_FAILED, failures=1, retry_at=NOW - 1),
     Do.INSTALL, "downloading"),
    ("a run never finished", target(), box(state=State.INTERRUPTED, last=attempt(Phase.WRITING)),
     tried(Outcome.STARTED, unfinished=1), Do.INSTALL, "downloading"),
    ("three runs never finished", target(), box(state=State.INTERRUPTED, last=attempt(Phase.WRITING)),
     tried(Outcome.STARTED, unfinished=3), Do.NOTHING, "held"),
    ("another bundle of the version (a new sha)", target(), box(), tried(Outcome.REFUSED, sha256="cd" * 32),
     Do.INSTALL, "downloading"),
]


@pytest.mark.parametrize(("what", "goal", "facts", "before", "do", "action"), CASES, ids=[c[0] for c in CASES])
def test_decide(what, goal, facts, before, do, action):
    d = decide(goal, facts, before, NOW)
    assert (d.do, d.action) == (do, action), d.detail
    assert (d.bundle is not None) == (do is not Do.NOTHING)


def test_the_reasons_say_why_and_what_the_operator_can_do():
    d = decide(target(), box(last=attempt(Phase.FELL_BACK, reason="slot b was not healthy within 60 s")), None, NOW)
    assert "1.3.0 was tried here and fell back: slot b was not healthy within 60 s" in d.detail
    assert "upgrade set --retry" in d.detail
    d = decide(target(), box(), tried(Outcome.REFUSED, reason="bundle is for model x [policy: wrong-model]"), NOW)
    assert d.detail.startswith("1.3.0 refused: bundle is for model x [policy: wrong-model]")
    d = decide(target(), box(), tried(Outcome.DOWNLOAD_FAILED, failures=2, retry_at=NOW + 60, reason="503"), NOW)
    assert d.wake_at == NOW + 60 and "next try in 60 s" in d.detail


def test_runs_are_recorded_with_their_outcome_and_back_off():
    t, b = target(), target().bundles[0]
    first = agent.begin(None, t, b, NOW)
    assert (first.outcome, first.unfinished, first.key()) == (Outcome.STARTED, 1, ("1.3.0", 0, SHA))
    again = agent.begin(first, t, b, NOW + 1)  # the first never ended (killed)
    assert again.unfinished == 2
    waits = []
    r = again
    for i in range(8):
        r = agent.ended(agent.begin(r, t, b, NOW), Outcome.DOWNLOAD_FAILED, NOW, "503")
        waits.append(r.retry_at - NOW)
        assert r.failures == i + 1 and r.unfinished == 0
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert agent.ended(r, Outcome.ARMED, NOW).failures == 0
    assert agent.ended(agent.ended(r, Outcome.REBOOTING, NOW), Outcome.REBOOTING, NOW).reboots == 2
    other = agent.begin(r, target("1.4.0"), b, NOW)
    assert (other.version, other.unfinished, other.failures) == ("1.4.0", 1, 0)


def test_the_record_survives_and_a_bad_one_counts_as_none(tmp_path):
    path = tmp_path / agent.AGENT_FILE
    assert agent.load_tried(path) is None
    t = tried(Outcome.ARMED)
    agent.save_tried(path, t)
    assert agent.load_tried(path) == t
    path.write_text('{"format": 1, "version": "1.3.0", "retry": 0, "sha256": "x", "outcome": "armed", "at": 1, '
                    '"from_a_newer_release": true}')
    assert agent.load_tried(path).outcome is Outcome.ARMED  # a newer release's field is ignored
    path.write_text("{not json")
    assert agent.load_tried(path) is None


def test_the_report_names_match_the_record_and_slots():
    assert set(typing.get_args(PhaseLiteral)) == {p.value for p in Phase}
    assert set(typing.get_args(BootStateLiteral)) == {s.value for s in State}


def test_the_largest_report_fits_a_channel_event():
    """Every text at its bound, every counter at 2^63-1, non-ASCII reasons: still one event of at most 4 KiB."""
    hostile = "\u202e\x1b[2J" + "ü" * 3000
    a = attempt(Phase.INTERRUPTED, to="9" * 64, reason=hostile).model_copy(update={"from_version": "8" * 64})
    from nsg.upgrade.record import Refusal

    rep = UpgradeReport(state=State.FELL_BACK, booted_slot="a", committed_slot="a", armed_slot="b",
                        running_version="1" * 64, committed_version="2" * 64,
                        slot_versions={"a": "3" * 64, "b": "4" * 64},
                        last_attempt=a, refused={f"code-{i:03d}-{'x' * 40}": 2**63 - 1 for i in range(40)},
                        last_refusal=Refusal(at=2**62, code="c" * 48, fault="operator", message=hostile))
    st = agent.state_of(Facts("m" * 64, "1" * 64, rep), agent.agent_report("held", target(), hostile, 2**62))
    assert len(st.refused) == 16 and st.last_attempt.reason.isascii() and len(st.agent.detail) == 256
    event = wire.Event(ts=1.0, kind="upgrade", detail=agent.event_detail(st))  # validates the 4 KiB bound
    assert UpgradeState.model_validate(event.detail) == st
    with pytest.raises(ValueError, match="octets as JSON"):  # the bound is real: twice the reasons do not fit
        wire.Event(ts=1.0, kind="upgrade", detail={**event.detail, "more": [hostile[:256]] * 12})


def test_the_outcome_for_people():
    def state(a=None, r=None, boot="committed"):
        return UpgradeState(appliance=True, state=boot, last_attempt=a, last_refusal=r,
                            agent=AgentReport(action="none"))

    def att(phase, reason="", updated=100.0):
        return AttemptReport(from_version="1.2.0", target_version="1.3.0", from_slot="a", target_slot="b",
                             phase=phase, started=1.0, updated=updated, reason=reason)

    assert state().outcome() == "" and state(att("committed")).outcome() == "committed"
    assert state(att("committed")).attempt_line() == "1.2.0 -> 1.3.0 (slot b)"
    assert state(att("fell-back", "not healthy")).outcome() == "fell back: not healthy"
    assert state(att("trying"), boot="fell-back").outcome() == "fell back"
    assert state(att("writing"), boot="interrupted").outcome() == "interrupted"
    assert state(att("armed"), boot="armed").outcome() == "in progress (armed)"
    refusal = RefusalReport(at=200.0, code="bad-signature", fault="bundle", message="does not verify")
    assert state(att("committed"), refusal).outcome() == "refused (bad-signature): does not verify"
    assert state(att("committed", updated=300.0), refusal).outcome() == "committed"  # an attempt after it
    assert state(None, refusal).outcome().startswith("refused")


def test_unknown_fields_of_a_newer_box_are_ignored_and_bounds_refuse():
    doc = {"appliance": True, "running_version": "1.2.0", "agent": {"action": "none"}, "a_newer_field": 1}
    assert UpgradeState.model_validate(doc).running_version == "1.2.0"
    for bad in ({"running_version": "1.2.0\x1b[2J"}, {"refused": {f"c{i}": 1 for i in range(17)}},
                {"agent": {"action": "explode"}}, {"last_refusal": {"at": 1, "code": "x", "fault": "x"}}):
        with pytest.raises(ValueError):
            UpgradeState.model_validate({**doc, **bad})


def test_the_config_section_is_validated():
    assert target().bundle_for(MODEL).size == 1000 and target().bundle_for("other") is None
    bad = [{"version": "1.3"}, {"bundles": []}, {"commit_after_s": 1},
           {"bundles": [{"model": MODEL, "url": "http://x/b", "sha256": SHA, "size": 1}]},
           {"bundles": [{"model": MODEL, "url": "https://x/../b", "sha256": SHA, "size": 1}]},
           {"bundles": [{"model": MODEL, "url": "https://x/b", "sha256": SHA, "size": 5 << 30}]},
           {"bundles": [{"model": MODEL, "url": "https://x/b", "sha256": SHA, "size": 1}] * 2}]
    good = target().model_dump(mode="json")
    for change in bad:
        with pytest.raises(ValueError):
            UpgradeTarget.model_validate({**good, **change})


def test_record_and_report_live_together():
    """A Record's attempt converts to the report's without loss of what matters."""
    rec = Record().with_attempt(attempt(Phase.ARMED), b="1.3.0")
    rep = UpgradeReport(state=State.ARMED, booted_slot="a", committed_slot="a", armed_slot="b",
                        running_version="1.2.0", committed_version="1.2.0", slot_versions=rec.slot_versions,
                        last_attempt=rec.attempt, refused={}, last_refusal=None)
    st = agent.state_of(Facts(MODEL, "1.2.0", rep), agent.agent_report("rebooting", target(), "into slot b", NOW))
    assert (st.armed_slot, st.last_attempt.phase, st.slot_versions, st.agent.target) == ("b", "armed", {"b": "1.3.0"},
                                                                                         "1.3.0")

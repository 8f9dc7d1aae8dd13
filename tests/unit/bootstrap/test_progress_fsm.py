"""The progress-report machine (bootstrap/fsm.py), sans I/O: what each kind of server hears for each
story, at each reporting level (RFC 8572 sections 5.3, 5.6, 7.3)."""

from __future__ import annotations

import pytest

from bootstrap import fsm
from bootstrap.errors import LocalBootstrapError
from bootstrap.sztp import PROGRESS_TYPES, Progress

ONBOARDED = [fsm.GotOnboarding("verbose"), fsm.ParsingStarted(), fsm.ParsingDone(), fsm.ConfigStarted(),
             fsm.ConfigDone()]
WAITED = [fsm.GotOnboarding("verbose"), fsm.ParsingStarted(), fsm.ParsingDone(), fsm.ConfigStarted(),
          fsm.Waiting("activation"), fsm.ConfigFailed("activation required")]
BAD_DOC = [fsm.GotOnboarding("verbose"), fsm.ParsingStarted(), fsm.ParsingFailed("not JSON")]
ABANDONED = [fsm.GotOnboarding("verbose"), fsm.ParsingStarted(), fsm.ParsingDone(), fsm.Abandoned("gone")]


def minimal(events):
    return [fsm.GotOnboarding("minimal") if isinstance(e, fsm.GotOnboarding) else e for e in events]


def default_level(events):  # the server sent no reporting-level: the YANG default, minimal
    return [fsm.GotOnboarding() if isinstance(e, fsm.GotOnboarding) else e for e in events]


# (story, trusted server, events, reports as "type" or "type: message", section)
STORIES = [
    ("onboarded, verbose", True, ONBOARDED,
     ["bootstrap-initiated", "parsing-initiated", "parsing-complete", "config-initiated", "config-complete",
      "bootstrap-complete"], "RFC 8572 §5.6, §7.3 reporting-level verbose"),
    ("onboarded, minimal", True, minimal(ONBOARDED), ["bootstrap-initiated", "bootstrap-complete"],
     "RFC 8572 §5.6: bootstrap-initiated and a terminating report"),
    ("onboarded, no level", True, default_level(ONBOARDED), ["bootstrap-initiated", "bootstrap-complete"],
     "RFC 8572 §7.3: reporting-level default minimal"),
    ("onboarded, untrusted", False, ONBOARDED, [], "RFC 8572 §5.3, §7.3: no reports to an untrusted server"),
    ("redirect, trusted", True, [fsm.GotRedirect()], [], "RFC 8572 §7.3: none when processing redirect information"),
    ("redirect, untrusted", False, [fsm.GotRedirect()], [], "RFC 8572 §7.3"),
    ("answer rejected, trusted", True, [fsm.AnswerRejected("bad signature")],
     ["bootstrap-initiated", "parsing-error: bad signature"], "RFC 8572 §7.3 parsing-error"),
    ("answer rejected, untrusted", False, [fsm.AnswerRejected("bad signature")], [], "RFC 8572 §5.3"),
    ("activation wait, verbose", True, WAITED,
     ["bootstrap-initiated", "parsing-initiated", "parsing-complete", "config-initiated", "informational: activation",
      "config-error: activation required"], "RFC 8572 §7.3 informational, config-error"),
    ("activation wait, minimal", True, minimal(WAITED), ["bootstrap-initiated", "config-error: activation required"],
     "RFC 8572 §5.6: the terminating error only"),
    ("bad onboarding document, minimal", True, minimal(BAD_DOC), ["bootstrap-initiated", "parsing-error: not JSON"],
     "RFC 8572 §7.3 parsing-error"),
    ("abandoned, verbose", True, ABANDONED,
     ["bootstrap-initiated", "parsing-initiated", "parsing-complete", "bootstrap-error: gone"],
     "RFC 8572 §7.3 bootstrap-error"),
]


@pytest.mark.parametrize("story,trusted,events,expected,section", STORIES, ids=[s[0] for s in STORIES])
def test_stories(story, trusted, events, expected, section):
    m = fsm.ProgressMachine(trusted=trusted)
    sent = []
    for e in events:
        sent += [f"{r.progress}: {r.message}" if r.message else str(r.progress) for r in m.handle(e)]
    assert sent == expected, section
    assert m.finished


def test_every_report_the_machine_can_make_is_an_rfc_progress_type():
    made = {k for _, kinds in fsm.TRANSITIONS.values() for k in kinds}
    assert made <= set(Progress) and {str(k) for k in made} <= set(PROGRESS_TYPES)
    assert made >= fsm.REQUIRED


@pytest.mark.parametrize("state,event", [
    (fsm.State.ASKING, fsm.ParsingStarted()),          # no parsing before the answer is understood
    (fsm.State.REDIRECTED, fsm.GotOnboarding()),       # one answer per machine
    (fsm.State.DONE, fsm.Abandoned("late")),           # nothing after bootstrap-complete (RFC 8572 §7.3)
    (fsm.State.FAILED, fsm.ConfigStarted()),
    (fsm.State.INITIATED, fsm.ConfigStarted()),        # configuration only once parsed
])
def test_illegal_transitions_raise(state, event):
    m = fsm.ProgressMachine(trusted=True, state=state)
    with pytest.raises(LocalBootstrapError, match="progress"):
        m.handle(event)
    assert m.state == state


def test_a_reporting_level_outside_the_rfc_is_our_bug():
    with pytest.raises(LocalBootstrapError, match="reporting-level"):
        fsm.ProgressMachine(trusted=True).handle(fsm.GotOnboarding("chatty"))

"""What the device tells one bootstrap server about its progress (RFC 8572 sections 5.3, 5.6, 7.3),
as a table-driven state machine: events in, progress reports out; no I/O, no clock.

One machine per get-bootstrapping-data answer. The driver feeds it what happened; the machine says
which reports to send, filtered by whom they would go to:

- never to a server the device could not authenticate (RFC 8572 5.3, and reporting-level in 7.3:
  "Progress reports are not sent ... when the bootstrap server is untrusted");
- never about redirect information (7.3: "... not sent when processing redirect information");
- with reporting-level "minimal" only the reports RFC 8572 requires (5.6: bootstrap-initiated, then
  one terminating report -- bootstrap-complete or an error); with "verbose" all of them.

    ASKING --GotRedirect-------------------------------> REDIRECTED   (nothing)
    ASKING --AnswerRejected-----------------------------> FAILED       bootstrap-initiated, parsing-error
    ASKING --GotOnboarding------------------------------> INITIATED    bootstrap-initiated
    INITIATED --ParsingStarted--> PARSING                              parsing-initiated
    PARSING --ParsingDone--> PARSED | --ParsingFailed--> FAILED        parsing-complete | parsing-error
    PARSED --ConfigStarted--> CONFIGURING                              config-initiated
    CONFIGURING --Waiting--> CONFIGURING                               informational (e.g. activation)
    CONFIGURING --ConfigDone--> DONE | --ConfigFailed--> FAILED        config-complete, bootstrap-complete
                                                                       | config-error
    INITIATED, PARSING, PARSED, CONFIGURING --Abandoned--> FAILED      bootstrap-error

"Parsing" is nsg's distinct parsing step: reading the onboarding information's configuration (nsg's
onboarding document). "Config" is committing it: EST enrollment for the LDevID, then storing the
LDevID, the controller's trust anchor and the onboarding document. nsg processes no boot image and
no scripts, so it never sends boot-image-* or *-script-* reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bootstrap.errors import LocalBootstrapError
from bootstrap.sztp import MINIMAL, REPORTING_LEVEL_DEFAULT, REPORTING_LEVELS, VERBOSE, Progress

# RFC 8572 section 5.6: at reporting-level "minimal" the device sends bootstrap-initiated and a
# terminating report: bootstrap-complete (or boot-image-installed-rebooting, which nsg never sends),
# or the error that made it abandon this server.
REQUIRED = frozenset({Progress.BOOTSTRAP_INITIATED, Progress.BOOTSTRAP_COMPLETE, Progress.PARSING_ERROR,
                      Progress.CONFIG_ERROR, Progress.BOOTSTRAP_ERROR})
# the reports that carry the event's message (RFC 8572 7.3: "The 'message' node ... SHOULD indicate ...")
_WITH_MESSAGE = frozenset({Progress.PARSING_ERROR, Progress.CONFIG_ERROR, Progress.BOOTSTRAP_ERROR,
                           Progress.INFORMATIONAL})


class State(StrEnum):
    ASKING = "asking"            # get-bootstrapping-data answered, the answer not yet understood
    REDIRECTED = "redirected"    # it was redirect information: done with this server, silently
    INITIATED = "initiated"      # it was onboarding information
    PARSING = "parsing"
    PARSED = "parsed"
    CONFIGURING = "configuring"
    DONE = "done"
    FAILED = "failed"


TERMINAL = frozenset({State.REDIRECTED, State.DONE, State.FAILED})


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GotRedirect:
    """The answer was redirect information (signed, or from a trusted server, or untrusted)."""


@dataclass(frozen=True)
class GotOnboarding:
    """The answer was onboarding information; ``level`` is the answer's reporting-level."""

    level: str = REPORTING_LEVEL_DEFAULT


@dataclass(frozen=True)
class AnswerRejected:
    """The answer did not decode or verify (RFC 8572 7.3 parsing-error: "malformed encoding, the
    device expecting signed data when only unsigned data is provided, ... the signature didn't match")."""

    message: str


@dataclass(frozen=True)
class ParsingStarted:
    pass


@dataclass(frozen=True)
class ParsingDone:
    pass


@dataclass(frozen=True)
class ParsingFailed:
    message: str


@dataclass(frozen=True)
class ConfigStarted:
    pass


@dataclass(frozen=True)
class Waiting:
    """Committing the configuration waits for something (e.g. an activation code); not an error."""

    message: str


@dataclass(frozen=True)
class ConfigDone:
    pass


@dataclass(frozen=True)
class ConfigFailed:
    message: str


@dataclass(frozen=True)
class Abandoned:
    """Any other reason to give up on this server."""

    message: str


Event = (GotRedirect | GotOnboarding | AnswerRejected | ParsingStarted | ParsingDone | ParsingFailed
         | ConfigStarted | Waiting | ConfigDone | ConfigFailed | Abandoned)


@dataclass(frozen=True)
class Report:
    """Command: send report-progress with this type and message."""

    progress: Progress
    message: str = ""


P = Progress
TRANSITIONS: dict[tuple[State, type], tuple[State, tuple[Progress, ...]]] = {
    (State.ASKING, GotRedirect): (State.REDIRECTED, ()),
    (State.ASKING, AnswerRejected): (State.FAILED, (P.BOOTSTRAP_INITIATED, P.PARSING_ERROR)),
    (State.ASKING, GotOnboarding): (State.INITIATED, (P.BOOTSTRAP_INITIATED,)),
    (State.INITIATED, ParsingStarted): (State.PARSING, (P.PARSING_INITIATED,)),
    (State.PARSING, ParsingDone): (State.PARSED, (P.PARSING_COMPLETE,)),
    (State.PARSING, ParsingFailed): (State.FAILED, (P.PARSING_ERROR,)),
    (State.PARSED, ConfigStarted): (State.CONFIGURING, (P.CONFIG_INITIATED,)),
    (State.CONFIGURING, Waiting): (State.CONFIGURING, (P.INFORMATIONAL,)),
    (State.CONFIGURING, ConfigDone): (State.DONE, (P.CONFIG_COMPLETE, P.BOOTSTRAP_COMPLETE)),
    (State.CONFIGURING, ConfigFailed): (State.FAILED, (P.CONFIG_ERROR,)),
    **{(s, Abandoned): (State.FAILED, (P.BOOTSTRAP_ERROR,))
       for s in (State.INITIATED, State.PARSING, State.PARSED, State.CONFIGURING)},
}


@dataclass
class ProgressMachine:
    """``trusted``: the server was authenticated by TLS (RFC 8572 5.3), so it may hear reports."""

    trusted: bool
    state: State = State.ASKING
    level: str = REPORTING_LEVEL_DEFAULT

    def handle(self, event: Event) -> tuple[Report, ...]:
        try:
            new, kinds = TRANSITIONS[(self.state, type(event))]
        except KeyError:
            raise LocalBootstrapError(f"progress: {type(event).__name__} in state {self.state}") from None
        if isinstance(event, GotOnboarding):
            if event.level not in REPORTING_LEVELS:
                raise LocalBootstrapError(f"progress: reporting-level {event.level!r}")
            self.level = event.level
        self.state = new
        message = getattr(event, "message", "")
        return tuple(Report(k, message if k in _WITH_MESSAGE else "") for k in kinds if self.wants(k))

    def wants(self, kind: Progress) -> bool:
        if not self.trusted:
            return False
        return self.level == VERBOSE or (self.level == MINIMAL and kind in REQUIRED)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

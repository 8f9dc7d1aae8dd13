"""The zero-touch sequence across bootstrap servers (RFC 8572 section 5), as a table-driven state
machine: events in, actions out; no I/O, no clock, no randomness.

The driver (bootstrap/driver.py) does what the actions ask -- read the box's trust anchors, call
get-bootstrapping-data, verify or decode the answer, parse nsg's onboarding document, enroll and
store -- and feeds back what came of it. This file decides the rest: which server is next, with
which trust anchors, whether an answer is believed, and how the whole run ends.

    READY --Start--> next
    next:     queue empty -----------------------------> GAVE_UP      GaveUp(summary of the failures)
              server came with trust anchors ----------> ASKING       Ask(server, its anchors)
              server came with none -------------------> LOADING      LoadBoxAnchors
    LOADING --BoxAnchors(some)-------------------------> ASKING       Ask(server, the box's anchors)
    LOADING --BoxAnchors(none)-------------------------> PROVISIONAL  Ask(server, no anchors)
    ASKING --Failed(server-not-authenticated),
             the anchors were the box's ---------------> PROVISIONAL  Note, Ask(..., fallback)   5.3
    ASKING, PROVISIONAL --Answer(redirect)-------------> next         its servers go first        2.1
                        --Answer(onboarding, believed)-> PARSING      Parse(configuration)
                        --Answer(onboarding, unsigned
                                 from PROVISIONAL)-----> next         refused: unsigned           5.3
                        --Rejected---------------------> next         refused (parsing-error)
    PARSING --Parsed-----------------------------------> COMMITTING   Commit(document)
    COMMITTING --Pending-------------------------------> COMMITTING   (informational, once)
    COMMITTING --Committed-----------------------------> DONE         Finished(document)
    LOADING, ASKING, PROVISIONAL, PARSING, COMMITTING --Failed--> next      Refused(server, error)
    DONE, GAVE_UP: every event is a LocalBootstrapError (so is any pair not in TRANSITIONS)

Trust, per server (RFC 8572 sections 2.1, 5.3, 5.5):

- a server is *trusted* when TLS authenticates it: with the trust anchors it came with (from
  discovery, or from trusted redirect information -- then they are mandatory, 5.5: no fallback), or,
  if it came with none, with the box's own trust anchors for bootstrap servers (5.1 item 4);
- otherwise (no anchors at all, or the box's failed) the device connects provisionally, and believes
  only data signed through the ownership voucher (5.4), or unsigned redirect information -- which is
  untrusted, so the trust anchors in it are discarded and the servers it names face the same test;
- redirect information is believed when it came from a trusted server or was signed.

Each server's answer gets its own fsm.ProgressMachine, which decides which fsm.Report actions come out
(none to untrusted servers, none about redirect information; bootstrap/fsm.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509

from bootstrap import cms, fsm, sztp_data
from bootstrap.errors import ActivationRequired, BootstrapError, LocalBootstrapError, Reason, RemoteBootstrapError
from bootstrap.sztp import REPORTING_LEVEL_DEFAULT

MAX_REDIRECTS = 4  # tuning: redirect information followed in one run before giving up (a loop?)
UNTRUSTED_REDIRECT = "untrusted-redirect"  # Server.source of servers named by untrusted redirect information


@dataclass(frozen=True)
class Server:
    url: str  # https://host[:port]
    # To authenticate it with; empty: with the box's own anchors, else a provisional connection.
    trust_anchors: tuple[x509.Certificate, ...] = ()
    source: str = "?"


class State(StrEnum):
    READY = "ready"
    LOADING = "loading"          # the server came with no anchors: the box's own are being read
    ASKING = "asking"            # get-bootstrapping-data over TLS that authenticates the server
    PROVISIONAL = "provisional"  # get-bootstrapping-data over a provisional connection (RFC 8572 5.3)
    PARSING = "parsing"          # believed onboarding information: nsg's document in it is being read
    COMMITTING = "committing"    # ... and committed (EST enrollment, files)
    DONE = "done"
    GAVE_UP = "gave-up"


TERMINAL = frozenset({State.DONE, State.GAVE_UP})


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    servers: tuple[Server, ...]  # in discovery order


@dataclass(frozen=True)
class BoxAnchors:
    anchors: tuple[x509.Certificate, ...]  # the box's own for bootstrap servers (RFC 8572 5.1 item 4); maybe none


@dataclass(frozen=True)
class Answer:
    """get-bootstrapping-data answered, and the answer decoded (and verified, if ``signed``)."""

    info: sztp_data.ConveyedInfo
    signed: bool
    level: str = REPORTING_LEVEL_DEFAULT  # the answer's reporting-level


@dataclass(frozen=True)
class Rejected:
    error: BootstrapError  # why the answer did not decode or verify


@dataclass(frozen=True)
class Parsed:
    document: object  # nsg's onboarding document (the driver's type)


@dataclass(frozen=True)
class Pending:
    message: str  # what committing waits for (e.g. the activation code); not an error


@dataclass(frozen=True)
class Committed:
    pass


@dataclass(frozen=True)
class Failed:
    error: BootstrapError  # why what the last action asked for (anchors, request, parsing, commit) failed


Event = Start | BoxAnchors | Answer | Rejected | Parsed | Pending | Committed | Failed


# --- actions -----------------------------------------------------------------------------------------
# One of LoadBoxAnchors, Ask, Parse, Commit (answer with an event), Finished or GaveUp (the end) comes
# last in every list handle() returns, after any Note, Refused and fsm.Report (send it to the server
# asked last) -- except Pending's, which come while the Commit is still under way: reports only.


@dataclass(frozen=True)
class LoadBoxAnchors:
    pass


@dataclass(frozen=True)
class Ask:
    """get-bootstrapping-data: over TLS that authenticates the server with ``anchors``, or, with none,
    provisionally and asking for signed data. ``fallback``: the same server again, provisionally,
    after the box's anchors failed to authenticate it (the same request, so the same nonce)."""

    server: Server
    anchors: tuple[x509.Certificate, ...]
    fallback: bool = False


@dataclass(frozen=True)
class Parse:
    configuration: bytes | None  # onboarding-information's configuration


@dataclass(frozen=True)
class Commit:
    document: object


@dataclass(frozen=True)
class Note:  # worth a log line
    url: str
    text: str


@dataclass(frozen=True)
class Refused:  # ``server`` failed us; the next one is tried
    server: Server
    error: BootstrapError


@dataclass(frozen=True)
class Finished:
    document: object


@dataclass(frozen=True)
class GaveUp:
    error: BootstrapError  # ActivationRequired if a server waits for the activation code


Action = LoadBoxAnchors | Ask | Parse | Commit | Note | Refused | Finished | GaveUp | fsm.Report

S = State
_NEXT = frozenset({S.LOADING, S.ASKING, S.GAVE_UP})  # wherever the next server (or none) leads
# (state, event) -> the states the event may lead to
TRANSITIONS: dict[tuple[State, type], frozenset[State]] = {
    (S.READY, Start): _NEXT,
    (S.LOADING, BoxAnchors): frozenset({S.ASKING, S.PROVISIONAL}),
    (S.LOADING, Failed): _NEXT,
    (S.ASKING, Failed): _NEXT | {S.PROVISIONAL},
    (S.PROVISIONAL, Failed): _NEXT,
    **{(s, Rejected): _NEXT for s in (S.ASKING, S.PROVISIONAL)},
    **{(s, Answer): _NEXT | {S.PARSING} for s in (S.ASKING, S.PROVISIONAL)},
    (S.PARSING, Parsed): frozenset({S.COMMITTING}),
    (S.PARSING, Failed): _NEXT,
    (S.COMMITTING, Pending): frozenset({S.COMMITTING}),
    (S.COMMITTING, Committed): frozenset({S.DONE}),
    (S.COMMITTING, Failed): _NEXT,
}


@dataclass
class SequenceMachine:
    state: State = State.READY
    queue: list[Server] = field(default_factory=list)
    server: Server | None = None  # the one being tried
    progress: fsm.ProgressMachine | None = None  # what the server being tried may hear
    redirects: int = 0
    failures: list[str] = field(default_factory=list)  # "url: why", in order
    activation: bool = False  # a server waits for the activation code
    document: object = None
    waited: bool = False

    def handle(self, event: Event) -> list[Action]:
        allowed = TRANSITIONS.get((self.state, type(event)))
        if allowed is None:
            raise LocalBootstrapError(f"sequence: {type(event).__name__} in state {self.state}")
        before = self.state
        actions = _HANDLERS[type(event)](self, event)
        if self.state not in allowed:
            raise LocalBootstrapError(f"sequence: {type(event).__name__} led from {before} to {self.state}")
        return actions

    # --- the steps -------------------------------------------------------------------------------

    def _start(self, event: Start) -> list[Action]:
        self.queue = list(event.servers)
        return self._next()

    def _next(self) -> list[Action]:
        self.progress, self.document, self.waited = None, None, False
        if not self.queue:
            self.server, self.state = None, S.GAVE_UP
            summary = "no bootstrap server onboarded us: " + "; ".join(self.failures)
            return [GaveUp(ActivationRequired(summary) if self.activation else LocalBootstrapError(summary))]
        self.server = self.queue.pop(0)
        if self.server.trust_anchors:
            return self._ask(self.server.trust_anchors)
        self.state = S.LOADING
        return [LoadBoxAnchors()]

    def _ask(self, anchors: tuple[x509.Certificate, ...], fallback: bool = False) -> list[Action]:
        assert self.server is not None
        self.state = S.ASKING if anchors else S.PROVISIONAL
        self.progress = fsm.ProgressMachine(trusted=bool(anchors))
        return [Ask(self.server, anchors, fallback)]

    def _box_anchors(self, event: BoxAnchors) -> list[Action]:
        return self._ask(event.anchors)

    def _failed(self, event: Failed) -> list[Action]:
        assert self.server is not None
        reason = event.error.reason if isinstance(event.error, RemoteBootstrapError) else None
        if self.state is S.ASKING and reason is Reason.SERVER_NOT_AUTHENTICATED and not self.server.trust_anchors:
            # the box's own anchors are a try; those that came with the server are mandatory (5.5)
            return [Note(self.server.url, "no trust anchor of this box authenticates the server; connecting "
                                          "provisionally (RFC 8572 section 5.3)"), *self._ask((), fallback=True)]
        told: list[Action] = []
        if self.state in (S.ASKING, S.PROVISIONAL) and reason is Reason.MALFORMED_RESPONSE:
            told = self._tell(fsm.AnswerRejected(str(event.error)))
        elif self.state is S.PARSING:
            told = self._tell(fsm.ParsingFailed(str(event.error)))
        elif self.state is S.COMMITTING:
            told = self._tell(fsm.ConfigFailed(str(event.error)))
        return told + self._refuse(event.error)

    def _rejected(self, event: Rejected) -> list[Action]:
        return self._tell(fsm.AnswerRejected(str(event.error))) + self._refuse(event.error)

    def _answer(self, event: Answer) -> list[Action]:
        assert self.server is not None
        believed = event.signed or self.state is S.ASKING  # RFC 8572 5.3, 5.4
        if isinstance(event.info, sztp_data.RedirectInfo):
            self._tell(fsm.GotRedirect())  # RFC 8572 7.3: no reports about redirect information
            self.redirects += 1
            if self.redirects > MAX_REDIRECTS:
                return self._refuse(RemoteBootstrapError(f"more than {MAX_REDIRECTS} redirects",
                                                         reason=Reason.TOO_MANY_REDIRECTS))
            notes: list[Action] = []
            try:
                named = [_named(s, believed, notes.append) for s in event.info.servers]
            except BootstrapError as exc:  # a trust anchor that is not a certs-only CMS
                return notes + self._refuse(exc)
            self.queue[:0] = named
            return notes + self._next()
        if not believed:
            why = ""
            if self.server.source == UNTRUSTED_REDIRECT:
                why = (" (it was named by unsigned redirect information from an untrusted server, whose trust "
                       "anchors are discarded: RFC 8572 section 2.1)")
            error = RemoteBootstrapError(f"unsigned onboarding information from a server that could not be "
                                         f"authenticated{why}; RFC 8572 section 5.3 accepts only signed data from "
                                         f"such a server", reason=Reason.UNSIGNED)
            return self._rejected(Rejected(error))
        # RFC 8572 7.3: bootstrap-initiated "indicates that the device just used the get-bootstrapping-data
        # RPC"; a reporting-level the progress machine does not know raises here, before any change
        told = self._tell(fsm.GotOnboarding(event.level))
        self.state = S.PARSING
        return [*told, *self._tell(fsm.ParsingStarted()), Parse(event.info.configuration)]

    def _parsed(self, event: Parsed) -> list[Action]:
        self.document, self.state = event.document, S.COMMITTING
        return [*self._tell(fsm.ParsingDone()), *self._tell(fsm.ConfigStarted()), Commit(event.document)]

    def _pending(self, event: Pending) -> list[Action]:
        if self.waited:  # one informational report per server, not one per retry
            return []
        self.waited = True
        return self._tell(fsm.Waiting(event.message))

    def _committed(self, event: Committed) -> list[Action]:
        self.state = S.DONE
        return [*self._tell(fsm.ConfigDone()), Finished(self.document)]

    # --- helpers ---------------------------------------------------------------------------------

    def _tell(self, event: fsm.Event) -> list[Action]:
        assert self.progress is not None
        return list(self.progress.handle(event))

    def _refuse(self, error: BootstrapError) -> list[Action]:
        assert self.server is not None
        self.failures.append(f"{self.server.url}: {error}")
        self.activation = self.activation or isinstance(error, ActivationRequired)
        return [Refused(self.server, error), *self._next()]


_HANDLERS: dict[type, Callable[..., list[Action]]] = {
    Start: SequenceMachine._start, BoxAnchors: SequenceMachine._box_anchors, Failed: SequenceMachine._failed,
    Rejected: SequenceMachine._rejected, Answer: SequenceMachine._answer, Parsed: SequenceMachine._parsed,
    Pending: SequenceMachine._pending, Committed: SequenceMachine._committed,
}


def _named(s: sztp_data.BootstrapServer, believed: bool, note: Callable[[Note], None]) -> Server:
    """A server named by redirect information: with its trust anchor if the information is believed,
    without if not (RFC 8572 section 2.1)."""
    host = f"[{s.address}]" if ":" in s.address else s.address
    url = f"https://{host}:{s.port or 443}"
    anchors: tuple[x509.Certificate, ...] = ()
    if s.trust_anchor and believed:  # a certs-only CMS (RFC 8572 section 6.3, trust-anchor)
        anchors = tuple(cms.parse_certs_only(s.trust_anchor))
    elif s.trust_anchor:
        note(Note(url, "trust anchor of untrusted redirect information discarded (RFC 8572 section 2.1)"))
    return Server(url, anchors, "redirect" if believed else UNTRUSTED_REDIRECT)

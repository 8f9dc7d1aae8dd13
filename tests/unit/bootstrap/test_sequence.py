"""The zero-touch sequence machine (bootstrap/sequence.py), sans I/O: every transition of its table,
the redirect limit, which servers are trusted, when the device falls back to a provisional connection,
and how a run ends (RFC 8572 sections 2.1, 5.3, 5.5, 7.3)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bootstrap import cms, fsm, sztp_data
from bootstrap import sequence as sq
from bootstrap.errors import ActivationRequired, BootstrapError, LocalBootstrapError, Reason, RemoteBootstrapError

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def _anchor() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bootstrap CA")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


CERT = _anchor()
OWN = sq.Server("https://own", (CERT,), "dhcp")  # came with trust anchors (mandatory, RFC 8572 5.5)
BARE = sq.Server("https://bare", (), "dns")      # came with none: the box's own, else provisional
OTHER = sq.Server("https://other", (CERT,), "file")

NOT_AUTH = RemoteBootstrapError("certificate verify failed", reason=Reason.SERVER_NOT_AUTHENTICATED)
MALFORMED = RemoteBootstrapError("not JSON", reason=Reason.MALFORMED_RESPONSE)
TRANSPORT = RemoteBootstrapError("connection refused", reason=Reason.TRANSPORT)
BAD_SIGNATURE = RemoteBootstrapError("signature does not verify", reason=Reason.BAD_SIGNATURE)
BAD_PEM = LocalBootstrapError("bootstrap-anchors.pem: not PEM certificates")
ACTIVATION = ActivationRequired("activation required")

ONBOARDING = sztp_data.OnboardingInfo(configuration=b"{}")
DOC = object()  # the driver's onboarding document; opaque to the machine


def redirect(address: str = "192.0.2.7", port: int | None = None, anchor: bool = True) -> sztp_data.RedirectInfo:
    return sztp_data.RedirectInfo((sztp_data.BootstrapServer(address, port, cms.certs_only([CERT]) if anchor
                                                             else None),))


def show(action: sq.Action) -> str:
    match action:
        case sq.Ask(server=s, anchors=a, fallback=f):
            return f"ask {s.url} {'trusted' if a else 'provisional'}{' fallback' if f else ''}"
        case sq.Refused(server=s, error=e):
            return f"refused {s.url}: {e.reason if isinstance(e, RemoteBootstrapError) else type(e).__name__}"
        case sq.GaveUp(error=e):
            return f"gave-up: {type(e).__name__}"
        case sq.Note(url=url):
            return f"note {url}"
        case fsm.Report(progress=p):
            return f"report {p}"
        case _:
            return type(action).__name__


def machine(servers, *events) -> sq.SequenceMachine:
    m = sq.SequenceMachine()
    m.handle(sq.Start(tuple(servers)))
    for e in events:
        m.handle(e)
    return m


VERBOSE_ONBOARDING = sq.Answer(ONBOARDING, signed=False, level="verbose")
GAVE_UP = "gave-up: LocalBootstrapError"

# (story, servers, events before, event, state before, state after, actions)
ROWS = [
    ("start, server with anchors", [OWN], [], sq.Start((OWN,)), sq.State.READY, sq.State.ASKING,
     ["ask https://own trusted"]),
    ("start, server without", [BARE], [], sq.Start((BARE,)), sq.State.READY, sq.State.LOADING, ["LoadBoxAnchors"]),
    ("start, no server", [], [], sq.Start(()), sq.State.READY, sq.State.GAVE_UP, [GAVE_UP]),
    ("the box has anchors", [BARE], [], sq.BoxAnchors((CERT,)), sq.State.LOADING, sq.State.ASKING,
     ["ask https://bare trusted"]),
    ("the box has none: provisional", [BARE], [], sq.BoxAnchors(()), sq.State.LOADING, sq.State.PROVISIONAL,
     ["ask https://bare provisional"]),
    ("the box's anchors unreadable", [BARE, OWN], [], sq.Failed(BAD_PEM), sq.State.LOADING, sq.State.ASKING,
     ["refused https://bare: LocalBootstrapError", "ask https://own trusted"]),
    ("box anchors fail: fallback (5.3)", [BARE], [sq.BoxAnchors((CERT,))], sq.Failed(NOT_AUTH), sq.State.ASKING,
     sq.State.PROVISIONAL, ["note https://bare", "ask https://bare provisional fallback"]),
    ("own anchors fail: no fallback (5.5)", [OWN, BARE], [], sq.Failed(NOT_AUTH), sq.State.ASKING,
     sq.State.LOADING, ["refused https://own: server-not-authenticated", "LoadBoxAnchors"]),
    ("trusted, malformed answer: parsing-error", [OWN], [], sq.Failed(MALFORMED), sq.State.ASKING,
     sq.State.GAVE_UP, ["report bootstrap-initiated", "report parsing-error", "refused https://own: malformed-response",
                        GAVE_UP]),
    ("trusted, no answer: nothing to report", [OWN, OTHER], [], sq.Failed(TRANSPORT), sq.State.ASKING,
     sq.State.ASKING, ["refused https://own: transport", "ask https://other trusted"]),
    ("provisional, malformed: no reports", [BARE], [sq.BoxAnchors(())], sq.Failed(MALFORMED), sq.State.PROVISIONAL,
     sq.State.GAVE_UP, ["refused https://bare: malformed-response", GAVE_UP]),
    ("provisional fails: no second fallback", [BARE], [sq.BoxAnchors((CERT,)), sq.Failed(NOT_AUTH)],
     sq.Failed(NOT_AUTH), sq.State.PROVISIONAL, sq.State.GAVE_UP,
     ["refused https://bare: server-not-authenticated", GAVE_UP]),
    ("trusted, bad signature: parsing-error", [OWN], [], sq.Rejected(BAD_SIGNATURE), sq.State.ASKING,
     sq.State.GAVE_UP, ["report bootstrap-initiated", "report parsing-error", "refused https://own: bad-signature",
                        GAVE_UP]),
    ("provisional, bad signature", [BARE], [sq.BoxAnchors(())], sq.Rejected(BAD_SIGNATURE), sq.State.PROVISIONAL,
     sq.State.GAVE_UP, ["refused https://bare: bad-signature", GAVE_UP]),
    ("trusted redirect: anchors kept", [OWN], [], sq.Answer(redirect(), signed=False), sq.State.ASKING,
     sq.State.ASKING, ["ask https://192.0.2.7:443 trusted"]),
    ("untrusted redirect: anchors discarded (2.1)", [BARE], [sq.BoxAnchors(())], sq.Answer(redirect(), signed=False),
     sq.State.PROVISIONAL, sq.State.LOADING, ["note https://192.0.2.7:443", "LoadBoxAnchors"]),
    ("signed redirect from provisional: believed", [BARE], [sq.BoxAnchors(())], sq.Answer(redirect(), signed=True),
     sq.State.PROVISIONAL, sq.State.ASKING, ["ask https://192.0.2.7:443 trusted"]),
    ("trusted onboarding", [OWN], [], VERBOSE_ONBOARDING, sq.State.ASKING, sq.State.PARSING,
     ["report bootstrap-initiated", "report parsing-initiated", "Parse"]),
    ("signed onboarding from provisional", [BARE], [sq.BoxAnchors(())],
     sq.Answer(ONBOARDING, signed=True, level="verbose"), sq.State.PROVISIONAL, sq.State.PARSING, ["Parse"]),
    ("unsigned onboarding from provisional (5.3)", [BARE], [sq.BoxAnchors(())], VERBOSE_ONBOARDING,
     sq.State.PROVISIONAL, sq.State.GAVE_UP, ["refused https://bare: unsigned", GAVE_UP]),
    ("parsed", [OWN], [VERBOSE_ONBOARDING], sq.Parsed(DOC), sq.State.PARSING, sq.State.COMMITTING,
     ["report parsing-complete", "report config-initiated", "Commit"]),
    ("document refused", [OWN], [VERBOSE_ONBOARDING], sq.Failed(MALFORMED), sq.State.PARSING, sq.State.GAVE_UP,
     ["report parsing-error", "refused https://own: malformed-response", GAVE_UP]),
    ("waiting for activation", [OWN], [VERBOSE_ONBOARDING, sq.Parsed(DOC)], sq.Pending("code?"),
     sq.State.COMMITTING, sq.State.COMMITTING, ["report informational"]),
    ("waiting again: said once", [OWN], [VERBOSE_ONBOARDING, sq.Parsed(DOC), sq.Pending("code?")],
     sq.Pending("code?"), sq.State.COMMITTING, sq.State.COMMITTING, []),
    ("committed", [OWN], [VERBOSE_ONBOARDING, sq.Parsed(DOC)], sq.Committed(), sq.State.COMMITTING, sq.State.DONE,
     ["report config-complete", "report bootstrap-complete", "Finished"]),
    ("commit failed", [OWN], [VERBOSE_ONBOARDING, sq.Parsed(DOC)], sq.Failed(ACTIVATION), sq.State.COMMITTING,
     sq.State.GAVE_UP, ["report config-error", "refused https://own: ActivationRequired",
                        "gave-up: ActivationRequired"]),
]


@pytest.mark.parametrize("story,servers,before,event,state,after,expected", ROWS, ids=[r[0] for r in ROWS])
def test_transitions(story, servers, before, event, state, after, expected):
    m = sq.SequenceMachine() if isinstance(event, sq.Start) else machine(servers, *before)
    assert m.state is state
    actions = m.handle(event)
    assert [show(a) for a in actions] == expected
    assert m.state is after
    # every answer ends in exactly one thing to do next (or the end), after the reports and notes;
    # Pending comes while the Commit is under way, so its answer holds reports only
    steps = (sq.LoadBoxAnchors, sq.Ask, sq.Parse, sq.Commit, sq.Finished, sq.GaveUp)
    if isinstance(event, sq.Pending):
        assert all(isinstance(a, fsm.Report) for a in actions)
    else:
        assert isinstance(actions[-1], steps) and not any(isinstance(a, steps) for a in actions[:-1])


def test_the_rows_cover_the_table():
    covered = {(r[4], type(r[3])) for r in ROWS}
    assert covered == set(sq.TRANSITIONS)
    for _, _, _, event, state, after, _ in ROWS:
        assert after in sq.TRANSITIONS[(state, type(event))]


def test_redirects_are_counted_and_limited():
    m = machine([OWN])
    for _ in range(sq.MAX_REDIRECTS):  # each names a server trusted with the believed anchor
        assert [show(a) for a in m.handle(sq.Answer(redirect(), signed=False))] == ["ask https://192.0.2.7:443 trusted"]
    actions = m.handle(sq.Answer(redirect(), signed=False))
    assert [show(a) for a in actions] == ["refused https://192.0.2.7:443: too-many-redirects", GAVE_UP]
    assert str(actions[-1].error).endswith(f"https://192.0.2.7:443: more than {sq.MAX_REDIRECTS} redirects")


def test_redirect_servers_go_first_and_keep_or_lose_their_anchors():
    believed = machine([OWN, OTHER])
    believed.handle(sq.Answer(redirect("2001:db8::7", 8443), signed=False))
    assert believed.server == sq.Server("https://[2001:db8::7]:8443", (CERT,), "redirect")
    assert believed.queue == [OTHER]

    untrusted = machine([BARE, OTHER], sq.BoxAnchors(()))
    untrusted.handle(sq.Answer(redirect(), signed=False))
    assert untrusted.server == sq.Server("https://192.0.2.7:443", (), sq.UNTRUSTED_REDIRECT)
    assert untrusted.queue == [OTHER]

    no_anchor = machine([BARE], sq.BoxAnchors(()))  # nothing to discard, nothing to note
    assert [show(a) for a in no_anchor.handle(sq.Answer(redirect(anchor=False), signed=False))] == ["LoadBoxAnchors"]


def test_a_redirect_trust_anchor_that_is_not_certs_only_refuses_the_redirecting_server():
    bad = sztp_data.RedirectInfo((sztp_data.BootstrapServer("192.0.2.7", None, b"\x30\x00"),))
    m = machine([OWN])
    actions = m.handle(sq.Answer(bad, signed=False))
    assert show(actions[0]).startswith("refused https://own:") and show(actions[-1]) == GAVE_UP
    assert m.queue == [] and m.redirects == 1


def test_unsigned_onboarding_from_a_server_an_untrusted_redirect_named_says_why():
    m = machine([BARE], sq.BoxAnchors(()), sq.Answer(redirect(), signed=False), sq.BoxAnchors(()))
    actions = m.handle(sq.Answer(ONBOARDING, signed=False))
    refused = actions[0]
    assert isinstance(refused, sq.Refused) and refused.error.reason is Reason.UNSIGNED
    msg = str(refused.error)
    assert "could not be authenticated" in msg and "discarded" in msg and "RFC 8572 section 2.1" in msg


@pytest.mark.parametrize("servers,before,fallback", [
    ([BARE], [sq.BoxAnchors((CERT,))], True),   # the box's own anchors: a try (RFC 8572 5.3)
    ([OWN], [], False),                          # the server's: mandatory (RFC 8572 5.5)
    ([sq.Server("https://r", (CERT,), "redirect")], [], False),  # from believed redirect information too
], ids=["box-anchors", "discovered-anchors", "redirect-anchors"])
def test_provisional_fallback_only_when_the_anchors_were_the_boxs(servers, before, fallback):
    m = machine(servers, *before)
    actions = m.handle(sq.Failed(NOT_AUTH))
    asks = [a for a in actions if isinstance(a, sq.Ask)]
    assert (asks == [sq.Ask(servers[0], (), fallback=True)]) is fallback
    assert (m.state is sq.State.PROVISIONAL) is fallback
    assert m.failures == ([] if fallback else [f"{servers[0].url}: certificate verify failed"])


def _commit_fails(error: BootstrapError) -> list:
    return [VERBOSE_ONBOARDING, sq.Parsed(DOC), sq.Failed(error)]


@pytest.mark.parametrize("first,kind", [(ACTIVATION, ActivationRequired), (TRANSPORT, LocalBootstrapError)])
def test_the_outcome_is_activation_required_if_any_server_said_so(first, kind):
    m = machine([OWN, OTHER], *_commit_fails(first))
    (gave_up,) = m.handle(sq.Failed(TRANSPORT))[-1:]
    assert isinstance(gave_up, sq.GaveUp) and type(gave_up.error) is kind and gave_up.error.fault == "local"
    assert str(gave_up.error) == (f"no bootstrap server onboarded us: https://own: {first}; "
                                  f"https://other: connection refused")
    assert m.state is sq.State.GAVE_UP


def test_a_whole_run_box_anchors_refused_then_signed_redirect_then_onboarded():
    m = sq.SequenceMachine()
    trace = []
    for event in (sq.Start((BARE,)), sq.BoxAnchors((CERT,)), sq.Failed(NOT_AUTH), sq.Answer(redirect(), signed=True),
                  VERBOSE_ONBOARDING, sq.Parsed(DOC), sq.Committed()):
        trace += [show(a) for a in m.handle(event)]
    assert trace == ["LoadBoxAnchors", "ask https://bare trusted", "note https://bare",
                     "ask https://bare provisional fallback", "ask https://192.0.2.7:443 trusted",
                     "report bootstrap-initiated", "report parsing-initiated", "Parse", "report parsing-complete",
                     "report config-initiated", "Commit", "report config-complete", "report bootstrap-complete",
                     "Finished"]
    assert m.state is sq.State.DONE and m.failures == [] and m.redirects == 1


EVERY_EVENT = [sq.Start((OWN,)), sq.BoxAnchors(()), sq.Answer(ONBOARDING, signed=True), sq.Rejected(BAD_SIGNATURE),
               sq.Parsed(DOC), sq.Pending("x"), sq.Committed(), sq.Failed(TRANSPORT)]


@pytest.mark.parametrize("events", [
    [sq.Start((OWN,)), VERBOSE_ONBOARDING, sq.Parsed(DOC), sq.Committed()],
    [sq.Start(())],
], ids=["done", "gave-up"])
@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: type(e).__name__)
def test_a_finished_run_refuses_every_event(events, event):
    m = sq.SequenceMachine()
    for e in events:
        m.handle(e)
    assert m.state in sq.TERMINAL
    state = m.state
    with pytest.raises(LocalBootstrapError, match=f"sequence: {type(event).__name__} in state {state}"):
        m.handle(event)
    assert m.state is state


def test_every_pair_outside_the_table_raises():
    for state in sq.State:
        for event in EVERY_EVENT:
            if (state, type(event)) in sq.TRANSITIONS:
                continue
            m = sq.SequenceMachine(state=state)
            with pytest.raises(LocalBootstrapError):
                m.handle(event)
            assert m.state is state


def test_an_unknown_reporting_level_is_a_local_error_and_changes_nothing():
    m = machine([OWN])
    with pytest.raises(LocalBootstrapError, match="reporting-level"):
        m.handle(sq.Answer(ONBOARDING, signed=False, level="chatty"))
    assert m.state is sq.State.ASKING and m.failures == []

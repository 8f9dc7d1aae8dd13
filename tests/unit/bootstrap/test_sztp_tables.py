"""Zero-touch by the letter: every SZTP message both sides produce and accept, row by row against the
YANG the RFCs define -- progress types, reporting levels, RPC input and output leaves, the
conveyed-information choices and the voucher leaves.

Each table below is written from the RFC (the section is in every row), never imported from the code,
so a test fails as soon as the client can send, or the controller accepts, a value the RFC does not
define: the client's side is derived from its constants, the controller's from what its handlers do.
"""

from __future__ import annotations

import base64
import datetime
import json
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives.serialization import Encoding

from bootstrap import cms, sztp, sztp_data
from bootstrap.errors import BootstrapError, RemoteBootstrapError
from bootstrap.sztp_data import OnboardingInfo, RedirectInfo, Voucher
from controller.sztp_server import Manufacturer, Owner, SztpServer
from tests.unit.bootstrap.test_cms import make_cert, p256
from tests.unit.bootstrap.test_sztp_data import (
    CREATED,
    LATER,
    MFG,
    MFG_KEY,
    NONCE,
    ONBOARDING_INFO,
    OTHER_CA,
    OWNER_CA,
    OWNER_CA_KEY,
    REDIRECT_INFO,
    SERIAL,
    voucher_body,
)

M = "ietf-sztp-bootstrap-server"
S73 = "RFC 8572 §7.3"  # the YANG module ietf-sztp-bootstrap-server
S63 = "RFC 8572 §6.3"  # the YANG module ietf-sztp-conveyed-info
V53 = "RFC 8366 §5.3"  # the YANG module ietf-voucher

# --- the tables, from the RFCs ---------------------------------------------------------------------

PROGRESS_TYPES = [(v, f"{S73} rpc report-progress, input leaf progress-type, enum {v}") for v in (
    "bootstrap-initiated", "parsing-initiated", "parsing-warning", "parsing-error", "parsing-complete",
    "boot-image-initiated", "boot-image-warning", "boot-image-error", "boot-image-mismatch",
    "boot-image-installed-rebooting", "boot-image-complete", "pre-script-initiated", "pre-script-warning",
    "pre-script-error", "pre-script-complete", "config-initiated", "config-warning", "config-error",
    "config-complete", "post-script-initiated", "post-script-warning", "post-script-error",
    "post-script-complete", "bootstrap-warning", "bootstrap-error", "bootstrap-complete", "informational")]
RFC_PROGRESS = {v for v, _ in PROGRESS_TYPES}
NOT_PROGRESS_TYPES = [  # (value, why the RFC does not allow it)
    ("onboarding-initiated", f"{S73}: not in the enumeration"),
    ("Bootstrap-Complete", f"{S73}: enum names are case-sensitive (RFC 7950 §9.6.4)"),
    (f"{M}:bootstrap-complete", f"{S73}: an enumeration is not an identity; no prefix (RFC 7951 §6.4)"),
    ("", f"{S73}: not in the enumeration"),
    (7, "RFC 7951 §6.4: an enumeration is a JSON string"),
    (None, f"{S73}: progress-type is mandatory true"),
]

REPORTING_LEVELS = [("minimal", f"{S73} rpc get-bootstrapping-data, output leaf reporting-level, enum minimal"),
                    ("verbose", f"{S73} rpc get-bootstrapping-data, output leaf reporting-level, enum verbose")]
REPORTING_LEVEL_DEFAULT = ("minimal", f"{S73} leaf reporting-level: default \"minimal\"")

GET_INPUT = [  # leaf, a valid JSON value (RFC 7951), an invalid one, section
    ("signed-data-preferred", [None], True, f"{S73} get-bootstrapping-data input: type empty, [null] (RFC 7951 §6.9)"),
    ("hw-model", "nsg-x86", 5, f"{S73} get-bootstrapping-data input: type string"),
    ("os-name", "nsg", ["nsg"], f"{S73} get-bootstrapping-data input: type string"),
    ("os-version", "0.1.0", 1.0, f"{S73} get-bootstrapping-data input: type string"),
    ("nonce", base64.b64encode(NONCE).decode(), base64.b64encode(bytes(15)).decode(),
     f"{S73} get-bootstrapping-data input: type binary, length 16..32"),
]
GET_OUTPUT = [(leaf, f"{S73} get-bootstrapping-data output leaf {leaf}") for leaf in (
    "reporting-level", "conveyed-information", "owner-certificate", "ownership-voucher")]
REPORT_INPUT = [(node, f"{S73} report-progress input node {node}") for node in (
    "progress-type", "message", "ssh-host-keys", "trust-anchor-certs")]

CONVEYED_CHOICES = [
    (f"{sztp_data.CONVEYED_MODULE}:redirect-information", REDIRECT_INFO,
     f"{S63} choice information-type, case redirect-information"),
    (f"{sztp_data.CONVEYED_MODULE}:onboarding-information", ONBOARDING_INFO,
     f"{S63} choice information-type, case onboarding-information"),
]

VOUCHER_LEAVES = [(leaf, f"{V53} container voucher, leaf {leaf}") for leaf in (
    "created-on", "expires-on", "assertion", "serial-number", "idevid-issuer", "pinned-domain-cert",
    "domain-cert-revocation-checks", "nonce", "last-renewal-date")]
VOUCHER_ASSERTIONS = [(a, f"{V53} leaf assertion, enum {a}") for a in ("verified", "logged", "proximity")]


def ids(rows):
    return [str(r[0]) for r in rows]


# --- the controller's handlers, called with a device's TLS identity and no sockets ----------------

IDEVID_KEY = p256()
IDEVID = make_cert(SERIAL, IDEVID_KEY, (MFG_KEY, MFG), serial=SERIAL)
OWNER_KEY = p256()
OWNER = make_cert("owner", OWNER_KEY, (OWNER_CA_KEY, OWNER_CA))  # the controller sends no intermediates


def server(**kw) -> SztpServer:
    doc = {"channel_url": "wss://198.51.100.1/channel", "est_url": "https://198.51.100.1",
           "trust_anchor": OTHER_CA.public_bytes(Encoding.PEM).decode()}
    return SztpServer(Owner(OWNER_KEY, OWNER, OWNER_CA), Manufacturer(MFG_KEY, MFG), lambda s: doc, (MFG,), **kw)


def request(path: str, body: object) -> web.Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    class Payload:
        async def read(self, n: int = -1) -> bytes:
            return raw

    ssl_object = SimpleNamespace(getpeercert=lambda binary_form=False: IDEVID.public_bytes(Encoding.DER))
    transport = SimpleNamespace(get_extra_info=lambda name, default=None: ssl_object if name == "ssl_object"
                                else default)
    return make_mocked_request("POST", path, headers={"Content-Type": sztp.MEDIA}, transport=transport,
                               payload=Payload())


async def call(handler, path: str, inp: dict) -> tuple[int, dict | None]:
    """(HTTP status, JSON body) of one RPC."""
    try:
        resp = await handler(request(path, {f"{M}:input": inp}))
    except web.HTTPException as exc:
        return exc.status, json.loads(exc.text) if exc.text else None
    return resp.status, json.loads(resp.text) if resp.text else None


def report(inp: dict) -> tuple[int, dict | None]:
    import asyncio

    return asyncio.run(call(server().report_progress, sztp.REPORT_PATH, inp))


def get(inp: dict, srv: SztpServer | None = None) -> tuple[int, dict | None]:
    import asyncio

    return asyncio.run(call((srv or server()).get_bootstrapping_data, sztp.GET_PATH, inp))


def restconf_error(body: dict | None) -> dict:
    """The one error of an RFC 8040 §7.1 errors document."""
    assert body is not None and set(body) == {"ietf-restconf:errors"}, body
    (err,) = body["ietf-restconf:errors"]["error"]
    assert err["error-type"] in ("transport", "rpc", "protocol", "application"), err  # RFC 8040 §7.1
    return err


# --- progress types --------------------------------------------------------------------------------


def test_client_can_send_only_progress_types_the_rfc_defines():
    can_send = set(sztp.PROGRESS)  # what report_progress lets through: the client's own constant
    assert can_send, "the client must be able to report something"
    assert can_send <= RFC_PROGRESS, f"not in {S73}'s progress-type enumeration: {sorted(can_send - RFC_PROGRESS)}"


@pytest.mark.parametrize("value,why", NOT_PROGRESS_TYPES[:3], ids=ids(NOT_PROGRESS_TYPES[:3]))
def test_client_refuses_to_send_a_progress_type_outside_the_rfc(value, why):
    import asyncio
    import ssl

    ctx = ssl.create_default_context()  # a context that authenticates: only the type can be wrong
    with pytest.raises(BootstrapError, match="progress") as ei:
        asyncio.run(sztp.report_progress("https://127.0.0.1:9", ctx, value))
    assert ei.value.fault == "local", why  # our bug, found before anything is sent


@pytest.mark.parametrize("value,section", PROGRESS_TYPES, ids=ids(PROGRESS_TYPES))
def test_controller_accepts_every_rfc_progress_type(value, section):
    status, _ = report({"progress-type": value, "message": "m"})
    assert status == 204, section


@pytest.mark.parametrize("value,why", NOT_PROGRESS_TYPES, ids=ids(NOT_PROGRESS_TYPES))
def test_controller_refuses_other_progress_types_with_a_restconf_error(value, why):
    status, body = report({"progress-type": value} if value is not None else {"message": "m"})
    assert status == 400, why
    err = restconf_error(body)
    assert err["error-tag"] == ("missing-element" if value is None else "invalid-value"), err
    assert err.get("error-path", "").endswith("progress-type"), err
    if value not in (None, ""):
        assert repr(value) in err["error-message"] or str(value) in err["error-message"], err


# --- report-progress input -------------------------------------------------------------------------


def test_client_report_body_has_only_rfc_input_nodes(monkeypatch):
    import asyncio
    import ssl

    sent: list[bytes] = []

    async def post(url, body, ctx, timeout, **kw):
        sent.append(body)
        return b""

    monkeypatch.setattr(sztp, "_post", post)
    ctx = ssl.create_default_context()
    for kind in sztp.PROGRESS:
        asyncio.run(sztp.report_progress("https://127.0.0.1:9", ctx, kind, "a message"))
    allowed = {n for n, _ in REPORT_INPUT}
    for body in sent:
        doc = json.loads(body)
        assert set(doc) == {f"{M}:input"}, doc
        assert set(doc[f"{M}:input"]) <= allowed, doc
        assert doc[f"{M}:input"]["progress-type"] in RFC_PROGRESS


@pytest.mark.parametrize("node,section", REPORT_INPUT, ids=ids(REPORT_INPUT))
def test_controller_accepts_every_rfc_report_input_node(node, section):
    value = {"progress-type": "bootstrap-complete", "message": "done",
             "ssh-host-keys": {"ssh-host-key": [{"algorithm": "ssh-ed25519", "key-data": "AAAA"}]},
             "trust-anchor-certs": {"trust-anchor-cert": [base64.b64encode(cms.certs_only([OTHER_CA])).decode()]},
             }[node]
    status, _ = report({"progress-type": "bootstrap-complete", node: value})
    assert status == 204, section


def test_controller_refuses_report_input_the_rfc_does_not_define():
    status, body = report({"progress-type": "informational", "severity": "high"})
    assert status == 400 and restconf_error(body)["error-tag"] == "unknown-element", body
    # YANG "when": ssh-host-keys and trust-anchor-certs only with bootstrap-complete (RFC 8572 §7.3)
    status, body = report({"progress-type": "informational", "ssh-host-keys": {"ssh-host-key": []}})
    assert status == 400 and "ssh-host-keys" in restconf_error(body).get("error-path", ""), body
    status, body = report({"progress-type": "informational", "message": 5})  # type string
    assert status == 400 and restconf_error(body)["error-tag"] == "invalid-value", body


# --- reporting levels ------------------------------------------------------------------------------


def output_doc(**members) -> bytes:
    out = {"conveyed-information": base64.b64encode(b"x").decode(), **members}
    return json.dumps({f"{M}:output": out}).encode()


@pytest.mark.parametrize("level,section", REPORTING_LEVELS, ids=ids(REPORTING_LEVELS))
def test_client_accepts_every_rfc_reporting_level(level, section):
    assert sztp.parse_output(output_doc(**{"reporting-level": level})).reporting_level == level, section


def test_client_takes_the_rfc_default_reporting_level_and_refuses_others():
    level, section = REPORTING_LEVEL_DEFAULT
    assert sztp.parse_output(output_doc()).reporting_level == level, section
    for bad in ("chatty", "Verbose", 1, None):
        with pytest.raises(RemoteBootstrapError) as ei:
            sztp.parse_output(output_doc(**{"reporting-level": bad}))
        assert ei.value.field == "reporting-level"


@pytest.mark.parametrize("level,section", REPORTING_LEVELS, ids=ids(REPORTING_LEVELS))
def test_controller_sends_only_rfc_output_leaves_and_levels(level, section):
    srv = server()
    srv.reporting_level = level
    status, body = get({"nonce": base64.b64encode(NONCE).decode()}, srv)
    assert status == 200, body
    out = body[f"{M}:output"]
    assert set(out) <= {leaf for leaf, _ in GET_OUTPUT}, out
    assert out.get("reporting-level", REPORTING_LEVEL_DEFAULT[0]) == level, section
    assert sztp.parse_output(json.dumps(body).encode()).signed  # and our client reads all of it


# --- get-bootstrapping-data input and output --------------------------------------------------------


def test_client_request_has_only_rfc_input_leaves_with_rfc_types():
    rows = {leaf: section for leaf, _, _, section in GET_INPUT}
    for signed in (True, False):
        for nonce in (None, NONCE, bytes(32)):
            doc = json.loads(sztp.request_body(nonce=nonce, signed_data_preferred=signed, hw_model="m",
                                               os_name="n", os_version="v"))
            inp = doc[f"{M}:input"]
            assert set(doc) == {f"{M}:input"} and set(inp) <= set(rows), inp
            if signed:
                assert inp["signed-data-preferred"] == [None], rows["signed-data-preferred"]
            if nonce is not None:
                assert 16 <= len(base64.b64decode(inp["nonce"])) <= 32, rows["nonce"]
            assert all(isinstance(inp[k], str) for k in ("hw-model", "os-name", "os-version"))


@pytest.mark.parametrize("leaf,good,bad,section", GET_INPUT, ids=ids(GET_INPUT))
def test_controller_accepts_each_rfc_input_leaf_and_refuses_wrong_types(leaf, good, bad, section):
    status, body = get({leaf: good})
    assert status == 200, (section, body)
    status, body = get({leaf: bad})
    assert status == 400, section
    err = restconf_error(body)
    assert err["error-tag"] == "invalid-value" and leaf in err.get("error-path", ""), err


def test_controller_refuses_input_leaves_the_rfc_does_not_define():
    status, body = get({"hw-model": "m", "serial-number": SERIAL})
    assert status == 400, body
    err = restconf_error(body)
    assert err["error-tag"] == "unknown-element" and "serial-number" in err["error-message"], err


@pytest.mark.parametrize("leaf,section", GET_OUTPUT, ids=ids(GET_OUTPUT))
def test_client_accepts_every_rfc_output_leaf(leaf, section):
    some = base64.b64encode(b"x").decode()
    members = {"reporting-level": "verbose", "owner-certificate": some, "ownership-voucher": some}
    if leaf in ("owner-certificate", "ownership-voucher"):  # RFC 8572 §7.3: each "must" the other
        out = sztp.parse_output(output_doc(**{"owner-certificate": some, "ownership-voucher": some}))
        assert out.signed, section
    elif leaf == "reporting-level":
        assert sztp.parse_output(output_doc(**{leaf: members[leaf]})).reporting_level == "verbose", section
    else:
        assert sztp.parse_output(output_doc()).conveyed_information == b"x", section


def test_client_refuses_output_leaves_the_rfc_does_not_define():
    with pytest.raises(RemoteBootstrapError) as ei:
        sztp.parse_output(output_doc(**{"trust-anchor": "eA=="}))
    assert ei.value.field == "trust-anchor"


# --- conveyed information -----------------------------------------------------------------------------


@pytest.mark.parametrize("choice,info,section", CONVEYED_CHOICES, ids=ids(CONVEYED_CHOICES))
def test_conveyed_information_choices_round_trip(choice, info, section):
    doc = json.loads(sztp_data.encode_conveyed(info))
    assert list(doc) == [choice], section  # exactly one case of the choice
    assert sztp_data.decode_conveyed(json.dumps(doc).encode()) == info, section


def test_conveyed_information_outside_the_choice_is_refused():
    both = {**json.loads(sztp_data.encode_conveyed(REDIRECT_INFO)), **json.loads(sztp_data.encode_conveyed(
        OnboardingInfo(configuration_handling="merge", configuration=b"{}")))}
    for doc in (both, {f"{sztp_data.CONVEYED_MODULE}:other-information": {}}, {}):
        with pytest.raises(RemoteBootstrapError):
            sztp_data.decode_conveyed(json.dumps(doc).encode())


def test_controller_conveys_only_rfc_choices():
    """Both answers the controller gives: onboarding information, and (to a device that cannot
    authenticate it) redirect information."""
    choices = {c for c, _, _ in CONVEYED_CHOICES}
    now = datetime.datetime.now(datetime.UTC)
    for redirect in (None, ("198.51.100.1", 8443, cms.certs_only([OTHER_CA]))):
        srv = server(redirect=redirect)
        status, body = get({"signed-data-preferred": [None], "nonce": base64.b64encode(NONCE).decode()}, srv)
        assert status == 200, body
        out = sztp.parse_output(json.dumps(body).encode())
        info = sztp_data.verify_bootstrapping_data(out.conveyed_information, out.owner_certificate,
                                                   out.ownership_voucher, MFG, SERIAL, NONCE, now)
        assert isinstance(info, RedirectInfo if redirect else OnboardingInfo)
        signed = cms.verify(out.conveyed_information, sztp_data.ID_CT_SZTP_CONVEYED_INFO_JSON, lambda s, c: True)
        assert set(json.loads(signed.content)) <= choices


# --- voucher ---------------------------------------------------------------------------------------


def test_voucher_constants_are_the_rfc_leaves_and_assertions():
    assert set(sztp_data._VOUCHER_LEAVES) == {leaf for leaf, _ in VOUCHER_LEAVES}, V53
    assert set(sztp_data.ASSERTIONS) == {a for a, _ in VOUCHER_ASSERTIONS}, V53


def test_vouchers_we_make_hold_only_rfc_leaves_and_cover_them_all():
    full_expiry = Voucher(SERIAL, OWNER_CA, CREATED, "logged", LATER, None, b"\x01" * 20, False, CREATED)
    full_nonce = Voucher(SERIAL, OWNER_CA, CREATED, "proximity", None, NONCE, b"\x01" * 20, False)
    seen: set[str] = set()
    for v in (full_expiry, full_nonce):
        body = json.loads(sztp_data.encode_voucher(v))[sztp_data.VOUCHER]
        assert set(body) <= {leaf for leaf, _ in VOUCHER_LEAVES}, body
        assert sztp_data.decode_voucher(sztp_data.encode_voucher(v)) == v  # and we accept what we make
        seen |= set(body)
    assert seen == {leaf for leaf, _ in VOUCHER_LEAVES}


@pytest.mark.parametrize("assertion,section", VOUCHER_ASSERTIONS, ids=ids(VOUCHER_ASSERTIONS))
def test_every_rfc_assertion_is_accepted(assertion, section):
    body = voucher_body(assertion=assertion)
    v = sztp_data.decode_voucher(json.dumps({sztp_data.VOUCHER: body}).encode())
    assert v.assertion == assertion, section


@pytest.mark.parametrize("extra", [{"assertion": "trusted"}, {"owner-name": "acme"}, {"serial-number": 5}])
def test_voucher_values_outside_the_rfc_are_refused(extra):
    body = voucher_body(**extra)
    with pytest.raises(RemoteBootstrapError) as ei:
        sztp_data.decode_voucher(json.dumps({sztp_data.VOUCHER: body}).encode())
    assert ei.value.field.startswith(sztp_data.VOUCHER)

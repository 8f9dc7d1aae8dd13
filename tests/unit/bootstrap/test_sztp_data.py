"""RFC 8366 vouchers and RFC 8572 conveyed information: the JSON is what the YANG modules say,
signed bundles verify end to end, and every way the device must refuse them is refused with a
reason and a message naming what failed. A test manufacturer CA vouches for device SERIAL and
pins an owner CA; the owner certificate signs the conveyed information."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from bootstrap import cms, sztp_data
from bootstrap.errors import LocalBootstrapError, Reason, RemoteBootstrapError
from bootstrap.sztp_data import (
    ONBOARDING,
    REDIRECT,
    VOUCHER,
    BootImage,
    BootstrapServer,
    ImageVerification,
    OnboardingInfo,
    RedirectInfo,
    Voucher,
    decode_conveyed,
    decode_voucher,
    encode_conveyed,
    encode_voucher,
    make_voucher,
    owner_certificate_bundle,
    sign_conveyed,
    verify_bootstrapping_data,
    verify_voucher,
)
from tests.unit.bootstrap.test_cms import FUZZ, NOW, OTHER_CA, OTHER_KEY, make_cert, mutated, p256

SERIAL = "NSG-0001"
NONCE = bytes(range(16))
LATER = NOW + datetime.timedelta(days=7)
CREATED = NOW - datetime.timedelta(hours=1)

MFG_KEY = p256()
MFG = make_cert("manufacturer CA", MFG_KEY, ca=True, key_cert_sign=True)
MASA_KEY = p256()
MASA = make_cert("MASA signer", MASA_KEY, (MFG_KEY, MFG))
OWNER_CA_KEY = p256()
OWNER_CA = make_cert("owner CA", OWNER_CA_KEY, ca=True)        # the pinned-domain-cert
OWNER_INT_KEY = p256()
OWNER_INT = make_cert("owner issuing CA", OWNER_INT_KEY, (OWNER_CA_KEY, OWNER_CA), ca=True)
OWNER_KEY = p256()
OWNER = make_cert("owner", OWNER_KEY, (OWNER_INT_KEY, OWNER_INT))
SIBLING_KEY = p256()
SIBLING = make_cert("someone else under the owner CA", SIBLING_KEY, (OWNER_INT_KEY, OWNER_INT))

REDIRECT_INFO = RedirectInfo((BootstrapServer("198.51.100.7", 8443, cms.certs_only([OWNER_CA])),
                              BootstrapServer("bootstrap.example.net")))
ONBOARDING_INFO = OnboardingInfo(
    boot_image=BootImage("nsg", "1.2.3", ("https://images.example.net/nsg-1.2.3.img",),
                         (ImageVerification("sha-256", bytes(range(32))),)),
    pre_configuration_script=b"#!/bin/sh\necho pre\n", configuration_handling="merge",
    configuration=b'{"system_ip": "198.19.255.1"}', post_configuration_script=b"#!/bin/sh\necho post\n")


def voucher(**kw) -> bytes:
    args = {"serial": SERIAL, "pinned_domain_cert": OWNER_CA, "manufacturer_key": MFG_KEY,
            "manufacturer_cert": MFG, "expires": LATER, "created": CREATED} | kw
    return make_voucher(**args)


def signed_voucher_json(body: dict) -> bytes:
    return cms.sign(json.dumps({VOUCHER: body}).encode(), sztp_data.ID_CT_ANIMA_JSON_VOUCHER, MFG_KEY, MFG)


def voucher_body(**kw) -> dict:
    body = json.loads(encode_voucher(Voucher(SERIAL, OWNER_CA, CREATED, expires_on=LATER)))[VOUCHER]
    return body | kw


def refused(reason: Reason, match: str, fn, *args, **kwargs) -> RemoteBootstrapError:
    with pytest.raises(RemoteBootstrapError, match=match) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


# --- vouchers ----------------------------------------------------------------------------------------------


def test_voucher_json_uses_the_rfc8366_names():
    doc = json.loads(encode_voucher(Voucher(SERIAL, OWNER_CA, CREATED, "logged", expires_on=LATER,
                                            idevid_issuer=b"\x01\x02", domain_cert_revocation_checks=False,
                                            last_renewal_date=LATER)))
    assert list(doc) == ["ietf-voucher:voucher"]
    body = doc["ietf-voucher:voucher"]
    assert body == {"created-on": "2026-06-01T11:00:00Z", "expires-on": "2026-06-08T12:00:00Z",
                    "assertion": "logged", "serial-number": SERIAL, "idevid-issuer": "AQI=",
                    "pinned-domain-cert": base64.b64encode(OWNER_CA.public_bytes(Encoding.DER)).decode(),
                    "domain-cert-revocation-checks": False, "last-renewal-date": "2026-06-08T12:00:00Z"}
    nonce_doc = json.loads(encode_voucher(Voucher(SERIAL, OWNER_CA, CREATED, nonce=NONCE)))[VOUCHER]
    assert nonce_doc["nonce"] == base64.b64encode(NONCE).decode() and "expires-on" not in nonce_doc


def test_voucher_round_trip_with_expiry_and_with_nonce():
    v = verify_voucher(voucher(), MFG, SERIAL, now=NOW)
    assert (v.serial_number, v.pinned_domain_cert, v.expires_on, v.nonce, v.assertion) == (
        SERIAL, OWNER_CA, LATER, None, "verified")
    v = verify_voucher(voucher(nonce=NONCE, expires=None), MFG, SERIAL, nonce=NONCE, now=NOW)
    assert v.nonce == NONCE and v.expires_on is None


def test_voucher_signed_by_a_masa_certificate_under_the_manufacturer():
    blob = voucher(manufacturer_key=MASA_KEY, manufacturer_cert=MASA)
    assert verify_voucher(blob, MFG, SERIAL, now=NOW).serial_number == SERIAL  # MASA is issued by the anchor
    sub_key = p256()
    sub = make_cert("manufacturer sub CA", sub_key, (MFG_KEY, MFG), ca=True)
    masa2_key = p256()
    masa2 = make_cert("MASA 2", masa2_key, (sub_key, sub))
    refused(Reason.CHAIN, "issued by .*CN=manufacturer sub CA", verify_voucher,
            voucher(manufacturer_key=masa2_key, manufacturer_cert=masa2), MFG, SERIAL, now=NOW)
    blob = voucher(manufacturer_key=masa2_key, manufacturer_cert=masa2, extra_certs=[sub])
    assert verify_voucher(blob, MFG, SERIAL, now=NOW).pinned_domain_cert == OWNER_CA


def test_voucher_dates_accept_offsets_and_fractions():
    body = voucher_body(**{"created-on": "2026-06-01T13:00:00.123456789+02:00"})
    v = verify_voucher(signed_voucher_json(body), MFG, SERIAL, now=NOW)
    assert v.created_on == datetime.datetime(2026, 6, 1, 11, 0, 0, 123456, tzinfo=datetime.UTC)


def test_wrong_manufacturer():
    blob = voucher(manufacturer_key=OTHER_KEY, manufacturer_cert=OTHER_CA)
    e = refused(Reason.CHAIN, r"ownership voucher: .*CN=other CA.* neither the trust anchor .*CN=manufacturer CA",
                verify_voucher, blob, MFG, SERIAL, now=NOW)
    assert e.fault == "remote"


def test_serial_mismatch():
    e = refused(Reason.VOUCHER_SERIAL, "is for serial-number 'NSG-0002', this device is 'NSG-0001'",
                verify_voucher, voucher(serial="NSG-0002"), MFG, SERIAL, now=NOW)
    assert e.field == "ietf-voucher:voucher/serial-number"


def test_nonce_rules():
    refused(Reason.VOUCHER_NONCE, "carries a different nonce", verify_voucher, voucher(nonce=NONCE, expires=None),
            MFG, SERIAL, nonce=bytes(16), now=NOW)
    refused(Reason.VOUCHER_NONCE, "carries no nonce", verify_voucher, voucher(), MFG, SERIAL, nonce=NONCE, now=NOW)
    refused(Reason.VOUCHER_NONCE, "carries a nonce, but this device sent none", verify_voucher,
            voucher(nonce=NONCE, expires=None), MFG, SERIAL, now=NOW)


def test_expired_and_unlimited_vouchers():
    refused(Reason.VOUCHER_EXPIRED, "expired at 2026-06-08T12:00:00Z", verify_voucher, voucher(), MFG, SERIAL,
            now=LATER)
    e = refused(Reason.VOUCHER_NOT_FRESH, "neither a nonce nor expires-on", verify_voucher, voucher(expires=None),
                MFG, SERIAL, now=NOW)
    assert e.field == "ietf-voucher:voucher/expires-on"


def test_created_in_the_future():
    refused(Reason.VOUCHER_FUTURE, "created-on .* is in the future", verify_voucher,
            voucher(created=NOW + datetime.timedelta(hours=1)), MFG, SERIAL, now=NOW)
    # A little clock skew is tolerated.
    assert verify_voucher(voucher(created=NOW + datetime.timedelta(minutes=1)), MFG, SERIAL, now=NOW)


def test_voucher_policy():
    aki = b"\xaa" * 20
    blob = voucher(idevid_issuer=aki)
    assert verify_voucher(blob, MFG, SERIAL, now=NOW, idevid_aki=aki).idevid_issuer == aki
    for ours in (None, b"\xbb" * 20):
        refused(Reason.VOUCHER_POLICY, "idevid-issuer", verify_voucher, blob, MFG, SERIAL, now=NOW, idevid_aki=ours)
    refused(Reason.VOUCHER_POLICY, "demands revocation checks", verify_voucher,
            signed_voucher_json(voucher_body(**{"domain-cert-revocation-checks": True})), MFG, SERIAL, now=NOW)
    refused(Reason.VOUCHER_POLICY, "assertion 'logged' is not accepted", verify_voucher, voucher(assertion="logged"),
            MFG, SERIAL, now=NOW, accept_assertions=("verified",))


def test_voucher_must_have_the_voucher_content_type():
    blob = cms.sign(encode_voucher(Voucher(SERIAL, OWNER_CA, CREATED, expires_on=LATER)),
                    sztp_data.ID_CT_SZTP_CONVEYED_INFO_JSON, MFG_KEY, MFG)
    refused(Reason.WRONG_CONTENT_TYPE, "expected id-ct-animaJSONVoucher", verify_voucher, blob, MFG, SERIAL, now=NOW)


CERT_B64 = base64.b64encode(OWNER_CA.public_bytes(Encoding.DER)).decode()


@pytest.mark.parametrize(("doc", "field", "why"), [
    ({"voucher": {}}, "/voucher", "unknown member"),
    ({VOUCHER: []}, VOUCHER, "must be a JSON object"),
    ({VOUCHER: {"serial-number": SERIAL}}, f"{VOUCHER}/created-on", "mandatory member missing"),
    ({VOUCHER: voucher_body(colour="blue")}, f"{VOUCHER}/colour", "unknown member"),
    ({VOUCHER: voucher_body(**{"ietf-voucher:serial-number": "x"})}, f"{VOUCHER}/ietf-voucher:serial-number",
     "unknown member"),
    ({VOUCHER: voucher_body(**{"serial-number": 1})}, f"{VOUCHER}/serial-number", "must be a string"),
    ({VOUCHER: voucher_body(**{"serial-number": ""})}, f"{VOUCHER}/serial-number", "is empty"),
    ({VOUCHER: voucher_body(**{"created-on": "2026-06-01 11:00:00"})}, f"{VOUCHER}/created-on",
     "not a yang:date-and-time"),
    ({VOUCHER: voucher_body(**{"created-on": "2026-02-30T11:00:00Z"})}, f"{VOUCHER}/created-on", "not a valid"),
    ({VOUCHER: voucher_body(assertion="trusted")}, f"{VOUCHER}/assertion", "not one of verified"),
    ({VOUCHER: voucher_body(nonce="AAAAAAAAAAA=")}, f"{VOUCHER}/nonce", "not appear together with expires-on"),
    ({VOUCHER: voucher_body(**{"expires-on": None})}, f"{VOUCHER}/expires-on", "must be a string"),
    ({VOUCHER: voucher_body(**{"pinned-domain-cert": "not base64!"})}, f"{VOUCHER}/pinned-domain-cert",
     "not base64"),
    ({VOUCHER: voucher_body(**{"pinned-domain-cert": "AAEC"})}, f"{VOUCHER}/pinned-domain-cert",
     "not a DER X.509 certificate"),
    ({VOUCHER: voucher_body(**{"domain-cert-revocation-checks": "yes"})},
     f"{VOUCHER}/domain-cert-revocation-checks", "true or false"),
])
def test_malformed_vouchers(doc, field, why):
    e = refused(Reason.MALFORMED_VOUCHER, why, decode_voucher, json.dumps(doc).encode())
    assert e.field == field
    # The same refusal through the signed path, prefixed with what was being checked.
    refused(Reason.MALFORMED_VOUCHER, f"ownership voucher: .*{why}", verify_voucher,
            cms.sign(json.dumps(doc).encode(), sztp_data.ID_CT_ANIMA_JSON_VOUCHER, MFG_KEY, MFG), MFG, SERIAL, now=NOW)


def test_voucher_nonce_length_and_duplicates():
    body = voucher_body(nonce="AAAA")
    del body["expires-on"]
    refused(Reason.MALFORMED_VOUCHER, r"is 3 octets, must be 8\.\.32", decode_voucher,
            json.dumps({VOUCHER: body}).encode())
    dup = b'{"ietf-voucher:voucher": {"serial-number": "a", "serial-number": "b"}}'
    refused(Reason.MALFORMED_VOUCHER, "appears twice", decode_voucher, dup)
    refused(Reason.MALFORMED_VOUCHER, "not JSON", decode_voucher, b"{")
    refused(Reason.MALFORMED_VOUCHER, "not UTF-8", decode_voucher, b'{"\xff": 1}')


def test_make_voucher_refuses_our_mistakes():
    with pytest.raises(LocalBootstrapError, match="together with expires-on"):
        voucher(nonce=NONCE)
    with pytest.raises(LocalBootstrapError, match=r"must be 8\.\.32"):
        voucher(nonce=b"short", expires=None)
    with pytest.raises(LocalBootstrapError, match="timezone-aware"):
        voucher(created=datetime.datetime(2026, 1, 1))
    with pytest.raises(LocalBootstrapError, match="assertion"):
        voucher(assertion="sure")
    with pytest.raises(LocalBootstrapError, match="timezone-aware"):
        verify_voucher(voucher(), MFG, SERIAL, now=datetime.datetime(2026, 6, 1))


# --- conveyed information ----------------------------------------------------------------------------------


def test_redirect_json_shape_and_round_trip():
    doc = json.loads(encode_conveyed(REDIRECT_INFO))
    assert doc == {REDIRECT: {"bootstrap-server": [
        {"address": "198.51.100.7", "port": 8443,
         "trust-anchor": base64.b64encode(cms.certs_only([OWNER_CA])).decode()},
        {"address": "bootstrap.example.net"}]}}
    assert decode_conveyed(encode_conveyed(REDIRECT_INFO)) == REDIRECT_INFO


def test_onboarding_json_shape_and_round_trip():
    doc = json.loads(encode_conveyed(ONBOARDING_INFO))
    body = doc[ONBOARDING]
    assert body["boot-image"] == {
        "os-name": "nsg", "os-version": "1.2.3", "download-uri": ["https://images.example.net/nsg-1.2.3.img"],
        "image-verification": [{"hash-algorithm": "ietf-sztp-conveyed-info:sha-256",
                                "hash-value": ":".join(f"{b:02x}" for b in range(32))}]}
    assert body["configuration-handling"] == "merge"
    assert base64.b64decode(body["configuration"]) == ONBOARDING_INFO.configuration
    assert set(body) == {"boot-image", "pre-configuration-script", "configuration-handling", "configuration",
                         "post-configuration-script"}
    assert decode_conveyed(encode_conveyed(ONBOARDING_INFO)) == ONBOARDING_INFO
    assert decode_conveyed(encode_conveyed(OnboardingInfo())) == OnboardingInfo()


def test_onboarding_from_another_implementation():
    """Unprefixed identity, upper-case hex, no boot image: all valid RFC 7951 for this module."""
    doc = {ONBOARDING: {"configuration-handling": "replace", "configuration": "PGNvbmZpZy8+",
                        "boot-image": {"download-uri": ["ftp://198.51.100.9/img"],
                                       "image-verification": [{"hash-algorithm": "sha-256",
                                                               "hash-value": ":".join(["AB"] * 32)}]}}}
    info = decode_conveyed(json.dumps(doc).encode())
    assert isinstance(info, OnboardingInfo)
    assert info.configuration == b"<config/>" and info.configuration_handling == "replace"
    assert info.boot_image.image_verification == (ImageVerification("sha-256", b"\xab" * 32),)


SERVER = {"address": "198.51.100.7"}


@pytest.mark.parametrize(("doc", "field", "why"), [
    ({}, "", "exactly one of"),
    ({REDIRECT: {"bootstrap-server": [SERVER]}, ONBOARDING: {}}, "", "exactly one of"),
    ({"redirect-information": {}}, "/redirect-information", "unknown member"),
    ([], "", "must be a JSON object"),
    ({REDIRECT: {}}, f"{REDIRECT}/bootstrap-server", "mandatory member missing"),
    ({REDIRECT: {"bootstrap-server": []}}, f"{REDIRECT}/bootstrap-server", "min-elements 1"),
    ({REDIRECT: {"bootstrap-server": {}}}, f"{REDIRECT}/bootstrap-server", "must be a JSON array"),
    ({REDIRECT: {"bootstrap-server": [{"port": 443}]}}, f"{REDIRECT}/bootstrap-server[0]/address", "mandatory"),
    ({REDIRECT: {"bootstrap-server": [SERVER | {"weight": 1}]}}, f"{REDIRECT}/bootstrap-server[0]/weight",
     "unknown member"),
    ({REDIRECT: {"bootstrap-server": [SERVER | {"port": "443"}]}}, f"{REDIRECT}/bootstrap-server[0]/port",
     "must be a number"),
    ({REDIRECT: {"bootstrap-server": [SERVER | {"port": True}]}}, f"{REDIRECT}/bootstrap-server[0]/port",
     "must be a number"),
    ({REDIRECT: {"bootstrap-server": [SERVER | {"port": 65536}]}}, f"{REDIRECT}/bootstrap-server[0]/port",
     "not a port number"),
    ({REDIRECT: {"bootstrap-server": [SERVER | {"port": 443.0}]}}, f"{REDIRECT}/bootstrap-server[0]/port",
     "must be a number"),
    ({REDIRECT: {"bootstrap-server": [{"address": "bad host!"}]}}, f"{REDIRECT}/bootstrap-server[0]/address",
     "neither an IP address nor a domain name"),
    ({REDIRECT: {"bootstrap-server": [SERVER, SERVER]}}, f"{REDIRECT}/bootstrap-server[1]/address", "listed twice"),
    ({REDIRECT: {"bootstrap-server": [SERVER | {"trust-anchor": "AAEC"}]}},
     f"{REDIRECT}/bootstrap-server[0]/trust-anchor", "not a certs-only CMS"),
    ({ONBOARDING: {"configuration": "AA=="}}, f"{ONBOARDING}/configuration-handling", "go together"),
    ({ONBOARDING: {"configuration-handling": "merge"}}, f"{ONBOARDING}/configuration", "go together"),
    ({ONBOARDING: {"configuration-handling": "append", "configuration": "AA=="}},
     f"{ONBOARDING}/configuration-handling", "not one of merge, replace"),
    ({ONBOARDING: {"configuration-handling": 1, "configuration": "AA=="}}, f"{ONBOARDING}/configuration-handling",
     "must be a string"),
    ({ONBOARDING: {"pre-configuration-script": "echo hi"}}, f"{ONBOARDING}/pre-configuration-script",
     "not base64"),
    ({ONBOARDING: {"post-configuration-script": ["AA=="]}}, f"{ONBOARDING}/post-configuration-script",
     "must be a string"),
    ({ONBOARDING: {"boot-image": {"os-name": 7}}}, f"{ONBOARDING}/boot-image/os-name", "must be a string"),
    ({ONBOARDING: {"boot-image": {"image": "x"}}}, f"{ONBOARDING}/boot-image/image", "unknown member"),
    ({ONBOARDING: {"boot-image": {"download-uri": "https://x/y"}}}, f"{ONBOARDING}/boot-image/download-uri",
     "must be a JSON array"),
    ({ONBOARDING: {"boot-image": {"download-uri": ["not a uri"]}}}, f"{ONBOARDING}/boot-image/download-uri[0]",
     "is not a URI"),
    ({ONBOARDING: {"boot-image": {"image-verification": [{"hash-algorithm": "sha-256", "hash-value": "00"}]}}},
     f"{ONBOARDING}/boot-image/image-verification", "needs download-uri"),
    ({ONBOARDING: {"boot-image": {"download-uri": ["https://x/y"], "image-verification": [
        {"hash-algorithm": "sha-256", "hash-value": "0g"}]}}},
     f"{ONBOARDING}/boot-image/image-verification[0]/hash-value", "not a yang:hex-string"),
    ({ONBOARDING: {"boot-image": {"download-uri": ["https://x/y"], "image-verification": [
        {"hash-algorithm": "sha-256", "hash-value": "00:11"}]}}},
     f"{ONBOARDING}/boot-image/image-verification[0]/hash-value", "32 octets, not 2"),
    ({ONBOARDING: {"boot-image": {"download-uri": ["https://x/y"], "image-verification": [
        {"hash-value": "00"}]}}}, f"{ONBOARDING}/boot-image/image-verification[0]/hash-algorithm", "mandatory"),
    ({ONBOARDING: {"boot-image": {"download-uri": ["https://x/y"], "image-verification": [
        {"hash-algorithm": "x:md5", "hash-value": "00"}, {"hash-algorithm": "x:md5", "hash-value": "01"}]}}},
     f"{ONBOARDING}/boot-image/image-verification[1]/hash-algorithm", "listed twice"),
])
def test_malformed_conveyed_information_names_the_field(doc, field, why):
    e = refused(Reason.MALFORMED_CONVEYED, why, decode_conveyed, json.dumps(doc).encode())
    assert e.field == field


def test_conveyed_information_must_be_json():
    for blob, why in ((b"", "not JSON"), (b'{"a": NaN}', "NaN is not JSON"), (b"\xfe\xff", "not UTF-8"),
                      (b"[" * 100000, "not JSON"), (f'{{"{REDIRECT}": {{}}, "{REDIRECT}": {{}}}}'.encode(), "twice")):
        refused(Reason.MALFORMED_CONVEYED, why, decode_conveyed, blob)


def test_encode_refuses_our_mistakes():
    for info in (RedirectInfo(()), RedirectInfo((BootstrapServer("x y"),)),
                 RedirectInfo((BootstrapServer("192.0.2.1", 0),)), OnboardingInfo(configuration=b"x"),
                 OnboardingInfo(boot_image=BootImage(image_verification=(ImageVerification("sha-256", b""),)))):
        with pytest.raises(LocalBootstrapError):
            encode_conveyed(info)
    with pytest.raises(LocalBootstrapError):
        encode_conveyed("redirect please")  # type: ignore[arg-type]


def test_unsigned_conveyed_round_trip():
    blob = sztp_data.encode_unsigned_conveyed(REDIRECT_INFO)
    assert sztp_data.decode_unsigned_conveyed(blob) == REDIRECT_INFO
    refused(Reason.WRONG_CONTENT_TYPE, "conveyed information: .*expected id-ct-sztpConveyedInfoJSON",
            sztp_data.decode_unsigned_conveyed, cms.encapsulate(b"{}", sztp_data.ID_CT_SZTP_CONVEYED_INFO_XML))


# --- the whole signed bundle (RFC 8572 section 5.4) ------------------------------------------------------------


def bundle(info=ONBOARDING_INFO, **kw) -> dict:
    args = {"conveyed_cms": sign_conveyed(info, OWNER_KEY, OWNER),
            "owner_certificate": owner_certificate_bundle(OWNER, [OWNER_INT]),
            "voucher_cms": voucher(), "manufacturer_anchor": MFG, "serial": SERIAL, "nonce": None, "now": NOW}
    return args | kw


@pytest.mark.parametrize("info", [ONBOARDING_INFO, REDIRECT_INFO])
def test_bootstrapping_data_verifies(info):
    assert verify_bootstrapping_data(**bundle(info)) == info


def test_bootstrapping_data_variants():
    # The pinned-domain-cert may ride along in the bundle; a nonce instead of an expiry.
    owner_bundle = owner_certificate_bundle(OWNER, [OWNER_CA, OWNER_INT])
    owner, others = sztp_data.owner_certificate_chain(owner_bundle)
    assert owner == OWNER and set(others) == {OWNER_CA, OWNER_INT}
    args = bundle(owner_certificate=owner_bundle, voucher_cms=voucher(nonce=NONCE, expires=None), nonce=NONCE)
    assert verify_bootstrapping_data(**args) == ONBOARDING_INFO
    # The conveyed information need not carry the owner certificate itself.
    lean = cms.sign(encode_conveyed(REDIRECT_INFO), sztp_data.ID_CT_SZTP_CONVEYED_INFO_JSON, OWNER_KEY, OWNER,
                    include_certs=False)
    assert verify_bootstrapping_data(**bundle(conveyed_cms=lean)) == REDIRECT_INFO
    # The pinned-domain-cert may be the owner certificate itself (RFC 8366), sent as a bare DER certificate.
    direct = voucher(pinned_domain_cert=OWNER)
    args = bundle(voucher_cms=direct, owner_certificate=OWNER.public_bytes(Encoding.DER))
    assert verify_bootstrapping_data(**args) == ONBOARDING_INFO


def test_owner_certificate_not_under_pinned_domain_cert():
    stranger_key = p256()
    stranger = make_cert("owner", stranger_key, (OTHER_KEY, OTHER_CA))
    args = bundle(conveyed_cms=sign_conveyed(ONBOARDING_INFO, stranger_key, stranger),
                  owner_certificate=owner_certificate_bundle(stranger))
    refused(Reason.OWNER_CERTIFICATE, "not under the voucher's pinned-domain-cert: .*neither the trust anchor "
            ".*CN=owner CA", verify_bootstrapping_data, **args)
    # Right chain, but the voucher pins another owner.
    refused(Reason.OWNER_CERTIFICATE, "pinned-domain-cert", verify_bootstrapping_data,
            **bundle(voucher_cms=voucher(pinned_domain_cert=OTHER_CA)))


def test_conveyed_information_signed_by_someone_else():
    args = bundle(conveyed_cms=sign_conveyed(ONBOARDING_INFO, SIBLING_KEY, SIBLING))
    refused(Reason.NOT_SIGNED_BY_OWNER, "conveyed information: signed by CN=someone else.*not by the owner "
            "certificate CN=owner", verify_bootstrapping_data, **args)


def test_conveyed_information_tampered_unsigned_or_xml():
    blob = sign_conveyed(ONBOARDING_INFO, OWNER_KEY, OWNER)
    at = blob.index(b'"merge"')
    refused(Reason.DIGEST_MISMATCH, "conveyed information: message-digest", verify_bootstrapping_data,
            **bundle(conveyed_cms=blob[:at] + b'"MERGE"' + blob[at + 7:]))
    refused(Reason.UNSIGNED, "conveyed information: .*arrived unsigned", verify_bootstrapping_data,
            **bundle(conveyed_cms=sztp_data.encode_unsigned_conveyed(ONBOARDING_INFO)))
    xml = cms.sign(b"<onboarding-information/>", sztp_data.ID_CT_SZTP_CONVEYED_INFO_XML, OWNER_KEY, OWNER)
    refused(Reason.WRONG_CONTENT_TYPE, "id-ct-sztpConveyedInfoXML", verify_bootstrapping_data,
            **bundle(conveyed_cms=xml))
    refused(Reason.MALFORMED_CONVEYED, "conveyed information: .*unknown member", verify_bootstrapping_data,
            **bundle(conveyed_cms=cms.sign(b'{"x": 1}', sztp_data.ID_CT_SZTP_CONVEYED_INFO_JSON, OWNER_KEY, OWNER)))


def test_voucher_problems_stop_the_bundle():
    refused(Reason.VOUCHER_SERIAL, "serial-number", verify_bootstrapping_data, **bundle(serial="NSG-0009"))
    refused(Reason.CHAIN, "ownership voucher", verify_bootstrapping_data, **bundle(manufacturer_anchor=OTHER_CA))


def test_owner_certificate_artifact_must_name_one_owner():
    two = owner_certificate_bundle(OWNER, [SIBLING, OWNER_INT])
    e = refused(Reason.OWNER_CERTIFICATE, "one end-entity certificate, found: ", verify_bootstrapping_data,
                **bundle(owner_certificate=two))
    assert "CN=owner," in str(e) and "CN=someone else" in str(e)
    refused(Reason.OWNER_CERTIFICATE, "owner certificate: ", verify_bootstrapping_data,
            **bundle(owner_certificate=b"\x30\x03\x02\x01\x01"))
    refused(Reason.OWNER_CERTIFICATE, "owner certificate: .*trailing", verify_bootstrapping_data,
            **bundle(owner_certificate=owner_certificate_bundle(OWNER) + b"\x00"))


def test_truncated_bundle_parts():
    good = bundle()
    for name in ("conveyed_cms", "owner_certificate", "voucher_cms"):
        blob = good[name]
        for cut in range(0, len(blob), 7):
            with pytest.raises(RemoteBootstrapError):
                verify_bootstrapping_data(**good | {name: blob[:cut]})


# --- fuzzing -----------------------------------------------------------------------------------------------------

KEYS = st.sampled_from(["bootstrap-server", "address", "port", "trust-anchor", "boot-image", "os-name",
                        "os-version", "download-uri", "image-verification", "hash-algorithm", "hash-value",
                        "configuration-handling", "configuration", "pre-configuration-script",
                        "post-configuration-script", "merge", "sha-256"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
    | st.sampled_from(["AA==", "198.51.100.1", "https://x/y", "merge", "replace", "sha-256", "00:11"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=5),
    max_leaves=20)
CONVEYED_DOCS = st.one_of(
    JSON_VALUES.map(lambda v: {REDIRECT: v}),
    JSON_VALUES.map(lambda v: {REDIRECT: {"bootstrap-server": v}}),
    JSON_VALUES.map(lambda v: {ONBOARDING: v}),
    JSON_VALUES.map(lambda v: {ONBOARDING: {"boot-image": v}}),
    JSON_VALUES)
VALID_JSON = [encode_conveyed(ONBOARDING_INFO), encode_conveyed(REDIRECT_INFO)]


def decode_or_refuse(data: bytes) -> None:
    try:
        info = decode_conveyed(data)
    except RemoteBootstrapError:
        return
    assert decode_conveyed(encode_conveyed(info)) == info  # whatever decodes, re-encodes the same


@FUZZ
@given(CONVEYED_DOCS)
def test_fuzz_decode_conveyed_structures(doc):
    decode_or_refuse(json.dumps(doc).encode())


@FUZZ
@given(st.binary(max_size=200) | mutated(VALID_JSON))
def test_fuzz_decode_conveyed_bytes(data):
    decode_or_refuse(data)


@FUZZ
@given(JSON_VALUES.map(lambda v: {VOUCHER: v}) | mutated([encode_voucher(Voucher(SERIAL, OWNER_CA, CREATED,
                                                                                 expires_on=LATER))]))
def test_fuzz_decode_voucher(doc):
    with contextlib.suppress(RemoteBootstrapError):
        decode_voucher(doc if isinstance(doc, bytes) else json.dumps(doc).encode())


GOOD = bundle()


@FUZZ
@given(st.sampled_from(["conveyed_cms", "owner_certificate", "voucher_cms"]), st.data())
def test_fuzz_bootstrapping_data_raises_only_remote_errors(name, data):
    blob = data.draw(mutated([GOOD[name]]))
    try:
        out = verify_bootstrapping_data(**GOOD | {name: blob})
    except RemoteBootstrapError:
        return
    assert out == ONBOARDING_INFO


def test_oids_are_the_registered_ones():
    # RFC 8366 section 8.3 and RFC 8572 section 10.3, under id-ct (1.2.840.113549.1.9.16.1).
    assert sztp_data.ID_CT_ANIMA_JSON_VOUCHER == "1.2.840.113549.1.9.16.1.40"
    assert sztp_data.ID_CT_SZTP_CONVEYED_INFO_XML == "1.2.840.113549.1.9.16.1.42"
    assert sztp_data.ID_CT_SZTP_CONVEYED_INFO_JSON == "1.2.840.113549.1.9.16.1.43"

"""The nsg-bootstrap.json document and the file source: strict validation, mount points."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.sources.file import FILE_NAME, FileSource, parse_bootstrap_document, removable_mount_points
from bootstrap.sources.model import DiscoveryContext, RemoteProtocolError


def _cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nsg test bootstrap CA")])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


CERT = _cert()
DER = CERT.public_bytes(Encoding.DER)
PEM = CERT.public_bytes(Encoding.PEM).decode()
B64 = base64.b64encode


def doc(**overrides) -> dict:
    d = {"nsg-bootstrap": 1, "bootstrap-servers": [{"uri": "https://bs.example.net:8443"}]}
    d.update(overrides)
    return {k: v for k, v in d.items() if v is not None}


def parse(d) -> list:
    raw = d if isinstance(d, bytes) else json.dumps(d).encode()
    return parse_bootstrap_document(raw, source="file", origin="file:///media/usb/nsg-bootstrap.json")


def test_servers_with_and_without_trust_anchor():
    got = parse(doc(**{"bootstrap-servers": [
        {"uri": "https://bs1.example.net", "trust-anchor": B64(DER).decode()},
        {"uri": "https://bs2.example.net", "trust-anchor": PEM},
        {"uri": "https://198.51.100.7:8443/sztp"},
    ]}))
    assert [(s.uri, s.trust_anchor_der, s.source) for s in got] == [
        ("https://bs1.example.net", DER, "file"), ("https://bs2.example.net", DER, "file"),
        ("https://198.51.100.7:8443/sztp", None, "file")]


def test_inline_signed_data_comes_first():
    data = {"conveyed-information": B64(b"ci").decode(), "owner-certificate": B64(b"oc").decode(),
            "ownership-voucher": B64(b"ov").decode()}
    got = parse(doc(**{"bootstrapping-data": data}))
    assert got[0].uri == "file:///media/usb/nsg-bootstrap.json"
    assert (got[0].inline.conveyed_information, got[0].inline.owner_certificate,
            got[0].inline.ownership_voucher) == (b"ci", b"oc", b"ov")
    assert got[1].uri == "https://bs.example.net:8443"
    only_data = parse(doc(**{"bootstrap-servers": None, "bootstrapping-data": data}))
    assert len(only_data) == 1 and only_data[0].inline is not None


GOOD_DATA = {"conveyed-information": "Y2k=", "owner-certificate": "b2M=", "ownership-voucher": "b3Y="}


@pytest.mark.parametrize(("bad", "why"), [
    (b"\xff\xfe", "not UTF-8"),
    (b"{", "not JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"nsg-bootstrap": 1, "nsg-bootstrap": 1}', "duplicate key"),
    (doc(**{"nsg-bootstrap": 2}), "must be 1"),
    (doc(**{"nsg-bootstrap": True}), "must be 1"),
    (doc(**{"nsg-bootstrap": "1"}), "must be 1"),
    (doc(**{"nsg-bootstrap": None}), "must be 1"),
    (doc(extra=1), "unknown key"),
    (doc(**{"bootstrap-servers": {}}), "must be a list"),
    (doc(**{"bootstrap-servers": []}), "is empty"),
    (doc(**{"bootstrap-servers": None}), "needs 'bootstrap-servers' or 'bootstrapping-data'"),
    (doc(**{"bootstrap-servers": ["https://x.example"]}), "must be an object"),
    (doc(**{"bootstrap-servers": [{"url": "https://x.example"}]}), "unknown key"),
    (doc(**{"bootstrap-servers": [{"uri": 5}]}), "'uri' must be a string"),
    (doc(**{"bootstrap-servers": [{"uri": "http://x.example"}]}), "https scheme"),
    (doc(**{"bootstrap-servers": [{"uri": "https://x.example", "trust-anchor": "@@"}]}), "not valid base64"),
    (doc(**{"bootstrap-servers": [{"uri": "https://x.example", "trust-anchor": "AAAA"}]}), "not an X.509"),
    (doc(**{"bootstrap-servers": [{"uri": "https://x.example", "trust-anchor": "-----BEGIN CERTIFICATE-----"}]}),
     "not an X.509"),
    (doc(**{"bootstrap-servers": [{"uri": "https://x.example"}] * 33}), "more than 32"),
    (doc(**{"bootstrapping-data": []}), "must be an object"),
    (doc(**{"bootstrapping-data": {"conveyed-information": "Y2k="}}), "signed data needs owner-certificate"),
    (doc(**{"bootstrapping-data": {**GOOD_DATA, "conveyed-information": ""}}), "empty"),
    (doc(**{"bootstrapping-data": {**GOOD_DATA, "ownership-voucher": 1}}), "base64 string"),
    (doc(**{"bootstrapping-data": {**GOOD_DATA, "signature": "x"}}), "unknown key"),
    (b'{"nsg-bootstrap": 1, "x": ' + b"9" * 5000 + b"}", "not acceptable JSON"),
    (b"[" * 100_000, "nested too deeply|not JSON"),
    (b" " * (256 * 1024 + 1), "more than"),
])
def test_invalid_documents_are_the_authors_fault(bad, why):
    with pytest.raises(RemoteProtocolError, match=why) as info:
        parse(bad)
    assert "file:///media/usb/nsg-bootstrap.json" in str(info.value)


def test_mount_points_of_removable_media():
    mounts = (
        "proc /proc proc rw 0 0\n"
        "/dev/sda1 / ext4 rw 0 0\n"
        "/dev/sdb1 /media/usb\\040stick vfat rw 0 0\n"
        "/dev/sr0 /media/cdrom iso9660 ro 0 0\n"
        "garbage\n"
    )
    assert [str(p) for p in removable_mount_points(mounts)] == ["/media/usb stick", "/media/cdrom"]


def test_file_source_reads_directories_in_order(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (b / FILE_NAME).write_text(json.dumps(doc(**{"bootstrap-servers": [{"uri": "https://b.example"}]})))
    (c / FILE_NAME).write_text(json.dumps(doc(**{"bootstrap-servers": [{"uri": "https://c.example"}]})))
    got = asyncio.run(FileSource([a, b, c, tmp_path / "missing"]).discover(DiscoveryContext()))
    assert [s.uri for s in got] == ["https://b.example", "https://c.example"]


def test_file_source_skips_a_bad_file_if_another_is_good(tmp_path, caplog):
    (tmp_path / "bad").mkdir()
    (tmp_path / "good").mkdir()
    (tmp_path / "bad" / FILE_NAME).write_text("{")
    (tmp_path / "good" / FILE_NAME).write_text(json.dumps(doc()))
    got = asyncio.run(FileSource([tmp_path / "bad", tmp_path / "good"]).discover(DiscoveryContext()))
    assert [s.uri for s in got] == ["https://bs.example.net:8443"]
    assert "not JSON" in caplog.text
    with pytest.raises(RemoteProtocolError, match="not JSON"):
        asyncio.run(FileSource([tmp_path / "bad"]).discover(DiscoveryContext()))


def test_file_source_uses_removable_mounts_by_default(tmp_path):
    media = tmp_path / "usb stick"
    media.mkdir()
    (media / FILE_NAME).write_text(json.dumps(doc()))
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sdb1 {str(media).replace(' ', chr(92) + '040')} vfat rw 0 0\n")
    got = asyncio.run(FileSource(mounts_file=mounts).discover(DiscoveryContext()))
    assert [s.uri for s in got] == ["https://bs.example.net:8443"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                        st.sampled_from(["nsg-bootstrap", "bootstrap-servers", "uri", "trust-anchor",
                                         "bootstrapping-data", "conveyed-information", "x"]), kids, max_size=4),
                    max_leaves=12))
def test_fuzz_documents_raise_only_remote_errors(value):
    with contextlib.suppress(RemoteProtocolError):
        parse(value)

"""Issue 22 section 2: a client certificate the device site's TLS refuses (here: from an unknown CA) gets
the TLS alert that says so (RFC 8446 6.2 / RFC 5246 7.2.2: unknown_ca), and the controller counts the
refusal with the subject that was presented and logs it, at most once a minute per subject (remote input).
A real TLS client against the controller's real device site (DeviceServices) on 127.0.0.1, TLS 1.2 and 1.3."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bootstrap import est
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from controller.services import DeviceServices
from controller.store import Store
from tests.unit.est.test_est import make_ca, make_leaf, save

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ctl.db")
    s.enterprises.create("acme")
    s.gateways.add("acme", "b1", serial="NSG-51", ports={}, uplinks=[
        {"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24", "gateway": "198.18.1.1"}])
    yield s
    s.close()


def attempt(port: int, ca_file: Path, cred: tuple[Path, Path] | None, version: ssl.TLSVersion) -> str:
    """Handshake and one HTTP request; what the client saw: "ok <status line>" or the SSL error's reason."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ctx.maximum_version = version
    if cred is not None:
        ctx.load_cert_chain(*map(str, cred))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # TLS 1.3: the client's handshake is over before the server has read its certificate;
                # the server's verdict arrives with the first read
                tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return "ok " + tls.recv(64).split(b"\r\n")[0].decode()
        except ssl.SSLError as exc:
            return exc.reason or str(exc)
        except OSError as exc:  # what a server that drops the connection without an alert causes
            return f"{type(exc).__name__}: {exc}"


async def run_attempts(svc_args, tmp_path: Path, plan: list[tuple[tuple[Path, Path] | None, str]]):
    svc = DeviceServices(*svc_args)
    await svc.start()
    ca_file = tmp_path / "controller-ca.pem"
    ca_file.write_bytes(svc.ca.cert_pem)
    try:
        seen = [await asyncio.to_thread(attempt, svc.port, ca_file, cred, VERSIONS[v]) for cred, v in plan]
        await asyncio.sleep(0.05)  # the server side of the last handshake
        return svc, seen
    finally:
        await svc.stop()


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_unknown_ca_gets_the_alert_and_is_counted_and_logged(store, tmp_path, caplog, version):
    rogue_ca = make_ca("rogue manufacturer")
    rogue = save(tmp_path, "rogue", *make_leaf(rogue_ca, serial="NSG-51"))
    other = save(tmp_path, "other", *make_leaf(rogue_ca, serial="NSG-ROGUE-2"))
    caplog.set_level(logging.INFO)

    svc, seen = asyncio.run(run_attempts((store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg"), tmp_path,
                                         [(rogue, version)] * 3 + [(other, version), (None, version)]))
    assert seen[:4] == ["TLSV1_ALERT_UNKNOWN_CA"] * 4, seen
    assert seen[4] == "ok HTTP/1.1 200 OK"  # no client certificate at all is the routes' business (401 there)
    assert svc.tls_counters["client_cert_refused"] == 4
    subject = "serialNumber=NSG-51,CN=NSG-51"
    assert svc.tls_refusals.by_subject == {subject: 3, "serialNumber=NSG-ROGUE-2,CN=NSG-ROGUE-2": 1}
    lines = [r.getMessage() for r in caplog.records if "client certificate refused" in r.getMessage()]
    # rate limited: one line per subject per minute, however often it knocks
    assert len(lines) == 2, lines
    assert subject in lines[0] and "unable to get local issuer certificate" in lines[0] and "127.0.0.1" in lines[0]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "client certificate refused" in r.getMessage())


def test_known_clients_still_get_through(store, tmp_path):
    """The IDevID of a known manufacturer enrolls over the same site (the alert is only for refusals)."""
    ident = FileIdentityStore(tmp_path / "gw")
    factory_init(ident.directory, "NSG-51", make_manufacturer_ca(tmp_path / "mfg"))

    async def main():
        svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
        await svc.start()
        try:
            (tmp_path / "ca.pem").write_bytes(svc.ca.cert_pem)
            return svc, await est.simple_enroll(svc.base_url, est.new_key(), "NSG-51",
                                                ssl_context=ident.tls_context("idevid", tmp_path / "ca.pem"))
        finally:
            await svc.stop()

    svc, cert = asyncio.run(main())
    assert est.subject_serial(cert.subject) == "NSG-51"
    assert svc.tls_counters["client_cert_refused"] == 0


def test_refusal_log_is_rate_limited_per_subject():
    from controller.est_server import HandshakeRefusals

    t = [0.0]
    r = HandshakeRefusals(interval_s=60.0, clock=lambda: t[0], max_subjects=2)
    assert r.refused("CN=a", "unknown ca", "192.0.2.1") is not None  # a log line
    assert r.refused("CN=a", "unknown ca", "192.0.2.1") is None
    t[0] = 61.0
    line = r.refused("CN=a", "unknown ca", "192.0.2.1")
    assert line is not None and "1 more" in line
    r.refused("CN=b", "x", "192.0.2.2")
    r.refused("CN=c\n\x1b[2J", "x", "192.0.2.3")  # remote text: bounded table, no raw control characters
    assert r.count == 5 and len(r.by_subject) == 2 and "CN=a" not in r.by_subject
    assert all(ch.isprintable() for s in r.by_subject for ch in s)
    assert r.refused("CN=" + "x" * 5000, "x", "192.0.2.4") is not None
    assert all(len(s) <= 300 for s in r.by_subject)


def test_client_says_the_server_refused_its_certificate(tmp_path):
    """bootstrap/est.py turns the alert into a message a person can act on (local fault: our credential)."""
    from tests.unit.est.test_est import run

    store = Store(tmp_path / "ctl.db")
    rogue = make_leaf(make_ca("rogue manufacturer"), serial="NSG-51")

    async def main():
        svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
        await svc.start()
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cadata=svc.ca.cert.public_bytes(serialization.Encoding.PEM).decode())
            ctx.load_cert_chain(*map(str, save(tmp_path, "rogue", *rogue)))
            with pytest.raises(est.EstError) as info:
                await est.simple_enroll(svc.base_url, est.new_key(), "NSG-51", ssl_context=ctx)
            return info.value
        finally:
            await svc.stop()
            store.close()

    err = run(main())
    assert err.fault == "local" and "refused our client certificate" in err.reason and "unknown" in err.reason


def test_first_certificate_of_a_certificate_message():
    """The codec that names the presented certificate: both layouts, and truncations anywhere."""
    from controller.est_server import first_certificate

    der = make_leaf(make_ca("ca"), serial="NSG-1")[1].public_bytes(serialization.Encoding.DER)

    def u24(n: int) -> bytes:
        return n.to_bytes(3, "big")

    entry12 = u24(len(der)) + der
    body12 = u24(len(entry12)) + entry12
    msg12 = b"\x0b" + u24(len(body12)) + body12
    entry13 = u24(len(der)) + der + b"\x00\x00"
    body13 = b"\x02ab" + u24(len(entry13)) + entry13  # a 2-byte certificate_request_context
    msg13 = b"\x0b" + u24(len(body13)) + body13
    assert first_certificate(msg12, tls13=False) == der
    assert first_certificate(msg13, tls13=True) == der
    empty = b"\x0b" + u24(4) + b"\x00" + u24(0)  # TLS 1.3, no certificate (the client has none)
    assert first_certificate(empty, tls13=True) is None
    assert first_certificate(b"\x01" + msg12[1:], tls13=False) is None  # not a Certificate message
    for cut in range(len(msg13) - 3):  # never an IndexError: every truncation is "none"
        assert first_certificate(msg13[:cut], tls13=True) is None

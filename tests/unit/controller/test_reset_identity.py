"""Issue 22 section 2: one enrolled identity per box. A box that holds a valid LDevID (per the store's
certificate records: unexpired, unrevoked) cannot /simpleenroll again with its IDevID (403, saying how to
reset it); renewal stays on /simplereenroll with the LDevID. `nsg-controller gateway reset-identity NAME`
(POST /api/v1/gateways/NAME/reset-identity) revokes its LDevIDs (the revocation list goes out) and so
allows exactly one new enrollment. The controller's real device site and store, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from bootstrap import est
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from controller import admin_cli
from controller.activation import ActivationGate
from controller.api import make_app
from controller.channel_server import ChannelHub
from controller.services import DeviceServices
from controller.store import Store
from tests.unit.controller.test_api import server  # noqa: F401 - a fixture: `nsg-controller serve`

SERIAL = "NSG-41"
REFUSAL = "this box already has an identity; reset it at the controller: nsg-controller gateway reset-identity b1"


def uplink(n: int) -> list[dict]:
    return [{"name": "wan0", "interface": "wan0", "mode": "static", "address": f"198.18.{n}.2/24",
             "gateway": f"198.18.{n}.1"}]


@pytest.fixture
def world(tmp_path):
    store = Store(tmp_path / "ctl.db")
    store.enterprises.create("acme", transport="esp")
    store.gateways.add("acme", "b1", serial=SERIAL, uplinks=uplink(1), ports={})
    store.gateways.add("acme", "b2", serial="NSG-42", uplinks=uplink(2), ports={})
    ident = FileIdentityStore(tmp_path / "gw" / "identity")
    factory_init(ident.directory, SERIAL, make_manufacturer_ca(tmp_path / "mfg"))
    yield store, ident, tmp_path
    store.close()


@contextlib.asynccontextmanager
async def device_site(store: Store, tmp_path: Path):
    svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
    await svc.start()
    (tmp_path / "controller-ca.pem").write_bytes(svc.ca.cert_pem)
    try:
        yield svc
    finally:
        await svc.stop()


async def enroll(svc: DeviceServices, ident: FileIdentityStore, tmp_path: Path):
    """A first enrollment with the IDevID: (key, LDevID) or the EstError."""
    key = est.new_key()
    try:
        cert = await est.simple_enroll(svc.base_url, key, SERIAL, issuers=[svc.ca.cert],
                                       ssl_context=ident.tls_context("idevid", tmp_path / "controller-ca.pem"))
    except est.EstError as exc:
        return exc
    return key, cert


def crl_serials(store: Store) -> set[int]:
    ipsec = store.documents.config_for("b1").ipsec
    pem = ipsec.crl if ipsec is not None else None
    return set() if pem is None else {r.serial_number for r in x509.load_pem_x509_crl(pem.encode())}


def test_a_second_enrollment_is_refused_until_the_operator_resets_the_box(world):
    store, ident, tmp_path = world

    async def main():
        async with device_site(store, tmp_path) as svc:
            first = await enroll(svc, ident, tmp_path)
            again = await enroll(svc, ident, tmp_path)
            assert isinstance(first, tuple), first
            assert isinstance(again, est.EstError)
            held = [c["serial"] for c in store.certificates.list(SERIAL)]

            revoked = store.gateways.reset_identity("b1")
            after_reset = await enroll(svc, ident, tmp_path)
            once_more = await enroll(svc, ident, tmp_path)
            # renewal with the new LDevID is not an enrollment: it stays allowed
            key, ldevid = after_reset
            renewed = await est.simple_reenroll(svc.base_url, est.new_key(), ldevid, issuers=[svc.ca.cert],
                                                ssl_context=_ldevid_context(tmp_path, key, ldevid))
            # the LDevID the reset revoked cannot renew itself back into a second identity
            with pytest.raises(est.EstError) as old:
                await est.simple_reenroll(svc.base_url, est.new_key(), first[1],
                                          ssl_context=_ldevid_context(tmp_path, *first))
            return first, again, held, revoked, after_reset, once_more, renewed, old.value, svc.gate.counters

    first, again, held, revoked, after_reset, once_more, renewed, old, counters = asyncio.run(main())
    assert (again.status, again.fault) == (403, "local") and REFUSAL in again.reason
    assert held == [f"{first[1].serial_number:x}"]  # the refused request left nothing on record
    assert revoked == (SERIAL, [f"{first[1].serial_number:x}"])
    assert store.certificates.is_revoked(first[1].serial_number)
    assert first[1].serial_number in crl_serials(store)  # gateways learn it with their next config
    assert isinstance(after_reset, tuple), after_reset  # exactly one enrollment after the reset ...
    assert isinstance(once_more, est.EstError) and once_more.status == 403 and REFUSAL in once_more.reason  # ... one
    assert renewed.subject == after_reset[1].subject
    assert old.status == 403 and "revoked" in old.reason
    assert counters["identity_held"] == 2
    assert not store.certificates.is_revoked(after_reset[1].serial_number)
    assert not store.certificates.is_revoked(renewed.serial_number)


def _ldevid_context(tmp_path: Path, key, cert):
    import ssl

    from cryptography.hazmat.primitives import serialization

    d = tmp_path / "ldevid-ctx"
    d.mkdir(exist_ok=True)
    (d / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").touch(mode=0o600)
    (d / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "controller-ca.pem"))
    ctx.load_cert_chain(str(d / "c.pem"), str(d / "k.pem"))
    return ctx


def test_concurrent_enrollments_yield_one_identity(world, monkeypatch):
    """Four enrollments at once, each past the authorizer's check before any is on record (a slow store):
    the check made when the certificate is recorded lets one through."""
    store, ident, tmp_path = world
    check = ActivationGate.lookup

    async def slow_lookup(self, serial, ctx):
        decision = check(self, serial, ctx)
        await asyncio.sleep(0.3)
        return decision

    monkeypatch.setattr(ActivationGate, "lookup", slow_lookup)

    async def main():
        async with device_site(store, tmp_path) as svc:
            return await asyncio.gather(*(enroll(svc, ident, tmp_path) for _ in range(4)))

    outcomes = asyncio.run(main())
    assert sum(isinstance(o, tuple) for o in outcomes) == 1, outcomes
    assert all(o.status == 403 for o in outcomes if isinstance(o, est.EstError))
    assert len(store.certificates.list(SERIAL)) == 1


def test_an_expired_or_revoked_identity_does_not_count(world):
    store, _, _ = world
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    store.certificates.record_issued(SERIAL, 0x51, past)
    assert not store.certificates.holds_identity(SERIAL)  # expired
    store.certificates.record_issued(SERIAL, 0x52, past + datetime.timedelta(days=30))
    assert store.certificates.holds_identity(SERIAL)
    assert store.gateways.reset_identity("b1") == (SERIAL, ["52"])
    assert not store.certificates.holds_identity(SERIAL)
    assert store.certificates.is_revoked(0x52) and not store.certificates.is_revoked(0x51)
    assert not store.certificates.holds_identity("NSG-42")  # b2 never enrolled


def test_reset_identity_over_the_api(world):
    store, _, _ = world
    token = store.tokens.create("t")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    store.certificates.record_issued(SERIAL, 0x61, later)
    store.certificates.record_issued(SERIAL, 0x62, later)  # renewed: both unexpired

    closed: list[tuple[int, bytes]] = []

    class Ws:
        async def close(self, *, code: int, message: bytes) -> None:
            closed.append((code, message))

    hub = ChannelHub(lambda serial: None)
    hub.sessions[SERIAL] = SimpleNamespace(ws=Ws())  # b1's channel, open with the LDevID being revoked

    async def main():
        async with TestClient(TestServer(make_app(store, hub=hub), host="127.0.0.1")) as client:
            h = {"Authorization": f"Bearer {token}"}
            ok = await client.post("/api/v1/gateways/b1/reset-identity", headers=h)
            again = await client.post("/api/v1/gateways/b1/reset-identity", headers=h)
            missing = await client.post("/api/v1/gateways/nope/reset-identity", headers=h)
            anonymous = await client.post("/api/v1/gateways/b1/reset-identity")
            return [(r.status, await r.json()) for r in (ok, again, missing, anonymous)]

    (s1, body1), (s2, body2), (s3, body3), (s4, _) = asyncio.run(main())
    assert s1 == 200 and body1["name"] == "b1" and body1["serial"] == SERIAL
    assert sorted(body1["revoked"]) == ["61", "62"]
    assert s2 == 200 and body2["revoked"] == []  # nothing left to revoke; the box may enroll (once)
    assert s3 == 404 and body3["error"]["code"] == "not_found"
    assert s4 == 401
    assert store.certificates.is_revoked(0x61) and store.certificates.is_revoked(0x62)
    assert closed[0] == (1008, b"identity reset by the operator")  # policy violation (RFC 6455 7.4.1)


def test_reset_identity_cli(monkeypatch, capsys):
    calls = []
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "nsgc_test")

    def call(self, method, path, body=None, **kw):
        calls.append((method, path, body))
        return {"name": "b1", "serial": SERIAL, "revoked": ["61"]}

    monkeypatch.setattr(admin_cli.Client, "call", call)
    status = admin_cli.main(["gateway", "reset-identity", "b1", "--url", "http://127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert calls == [("POST", "/gateways/b1/reset-identity", None)]
    assert "b1" in out and "61" in out and "enroll" in out
    status = admin_cli.main(["gateway", "reset-identity", "b1", "--json", "--url", "http://127.0.0.1:9"])
    assert status == 0 and json.loads(capsys.readouterr().out)["revoked"] == ["61"]


def test_reset_identity_cli_against_a_real_server(server, capsys, monkeypatch):  # noqa: F811
    """`nsg-controller gateway reset-identity` -> the API of `nsg-controller serve` -> the store."""
    url, db = server
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    with Store(db) as store:
        monkeypatch.setenv("NSG_CONTROLLER_TOKEN", store.tokens.create("t"))
        store.enterprises.create("acme", transport="esp")
        store.gateways.add("acme", "b1", serial=SERIAL, uplinks=uplink(1), ports={})
        store.certificates.record_issued(SERIAL, 0x71, later)
    status = admin_cli.main(["gateway", "reset-identity", "b1", "--url", url])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "71" in out
    status = admin_cli.main(["gateway", "reset-identity", "nope", "--url", url])
    assert status == 2 and "nope" in capsys.readouterr().err
    with Store(db) as store:
        assert store.certificates.is_revoked(0x71) and not store.certificates.holds_identity(SERIAL)

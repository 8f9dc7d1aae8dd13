"""controller.store: validation naming the field, conflicts, system IPs, generations, secrets, persistence."""

from __future__ import annotations

import json
import sqlite3
import stat
from ipaddress import IPv4Address

import pytest
from cryptography import x509

from controller.store import Conflict, NotFound, Store, StoreError
from controller.store_db import SCHEMA_VERSION
from nsg.model import ConfigError, parse_config
from nsg.model.config import dump_config


def wan(n: int, **extra) -> list[dict]:
    return [{"name": "wan0", "interface": "eth0", "mode": "static", "address": f"198.18.{n}.2/24",
             "gateway": f"198.18.{n}.1", **extra}]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        yield s


@pytest.fixture
def acme(store):
    store.enterprises.create("acme")
    store.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
    return store


def gen(store: Store, ent: str = "acme") -> int:
    return store.enterprises.get(ent).generation


def raises(exc_type, field: str):
    """pytest.raises that also checks the error names the field."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc_type)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            assert self.info.value.field == field, self.info.value
            return handled

    return _Check()


# -- enterprises ---------------------------------------------------------------------------------


def test_enterprise_round_trip_and_duplicate(store):
    e = store.enterprises.create("acme")
    assert (e.name, e.transport, e.ipsec, e.generation) == ("acme", "plain", None, 1)
    assert [x.name for x in store.enterprises.list()] == ["acme"]
    with raises(Conflict, "name"):
        store.enterprises.create("acme")
    with raises(StoreError, "name"):
        store.enterprises.create("Not A Name")
    with raises(StoreError, "transport"):
        store.enterprises.create("other", transport="gre")
    store.enterprises.delete("acme")
    with raises(NotFound, "enterprise"):
        store.enterprises.get("acme")


def test_esp_enterprise_holds_no_data_plane_secret_unless_psk_is_chosen(store):
    # issue 13 section 2: before, every esp enterprise got one random PSK that all its gateways held
    a = store.enterprises.create("a", transport="esp")
    assert a.ipsec.auth == "ldevid" and a.ipsec.psk is None
    c = store.enterprises.create("c", transport="esp", ipsec={"psk": "0123456789abcdef-given", "dpd_s": 10})
    assert (c.ipsec.auth, c.ipsec.psk, c.ipsec.dpd_s) == ("psk", "0123456789abcdef-given", 10)
    d = store.enterprises.create("d", transport="esp", ipsec={"dpd_s": 7})  # settings without credentials
    assert d.ipsec.auth == "ldevid" and d.ipsec.psk is None and d.ipsec.dpd_s == 7
    with raises(StoreError, "ipsec"):
        store.enterprises.create("f", transport="esp", ipsec={"auth": "psk"})  # psk without the secret
    with raises(StoreError, "ipsec.ike_proposals"):
        store.enterprises.create("e", transport="esp", ipsec={"ike_proposals": ["des-md5"]})


# -- subnets -------------------------------------------------------------------------------------


def test_subnet_validation_names_the_field(acme):
    cases = [
        ({"vni": 0}, StoreError, "vni"),
        ({"vni": 1 << 24}, StoreError, "vni"),
        ({"vni": 100, "name": "other"}, Conflict, "vni"),
        ({"name": "corp", "vni": 101, "cidr": "198.51.100.0/24", "gateway": "198.51.100.1"}, Conflict, "name"),
        ({"cidr": "198.51.100.1/24"}, StoreError, "cidr"),  # host bits
        ({"cidr": "not-a-net"}, StoreError, "cidr"),
        ({"cidr": "198.51.100.0/31", "gateway": "198.51.100.1"}, StoreError, "cidr"),
        ({"cidr": "192.0.2.128/25", "gateway": "192.0.2.129"}, StoreError, "cidr"),  # overlaps corp
        ({"cidr": "198.19.0.0/16", "gateway": "198.19.0.1"}, StoreError, "cidr"),  # holds the system IP pool
        ({"gateway": "203.0.113.1"}, StoreError, "gateway"),
        ({"gateway": "198.51.100.0"}, StoreError, "gateway"),
        ({"name": "Bad Name"}, StoreError, "name"),
    ]
    for change, exc, field in cases:
        args = {"name": "dmz", "vni": 200, "cidr": "198.51.100.0/24", "gateway": "198.51.100.1", **change}
        name = args.pop("name")
        with raises(exc, field):
            acme.enterprises.add_subnet("acme", name, **args)
    assert [s.name for s in acme.enterprises.list_subnets("acme")] == ["corp"]
    assert gen(acme) == 2  # only the first subnet counted
    with raises(NotFound, "enterprise"):
        acme.enterprises.add_subnet("nope", "x", vni=5, cidr="198.51.100.0/24", gateway="198.51.100.1")


def test_same_vni_and_cidr_are_fine_in_another_enterprise(acme):
    acme.enterprises.create("globex")
    s = acme.enterprises.add_subnet("globex", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
    assert (s.enterprise, s.vni) == ("globex", 100)


def test_subnet_with_ports_cannot_be_deleted(acme):
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), ports={"corp": ["lan0"]})
    with raises(Conflict, "name"):
        acme.enterprises.delete_subnet("acme", "corp")
    acme.gateways.update("b1", ports={})
    acme.enterprises.delete_subnet("acme", "corp")
    with raises(NotFound, "name"):
        acme.enterprises.delete_subnet("acme", "corp")


# -- gateways ------------------------------------------------------------------------------------


def test_gateway_round_trip(acme):
    g = acme.gateways.add("acme", "b1", serial="SN-0001", uplinks=wan(1), ports={"corp": ["lan0", "lan1"]})
    assert g.system_ip == IPv4Address("198.19.255.1")
    assert g.ports == {"corp": ("lan0", "lan1")} and g.uplinks[0].interface == "eth0"
    assert acme.gateways.get("b1") == g
    assert acme.gateways.list("acme") == [g]
    acme.gateways.delete("b1")
    with raises(NotFound, "name"):
        acme.gateways.get("b1")


def test_gateway_validation_names_the_field(acme):
    cases = [
        ({"serial": "has space"}, StoreError, "serial"),
        ({"uplinks": []}, StoreError, "uplinks"),
        ({"uplinks": [{"name": "wan0", "interface": "eth0", "mode": "static"}]}, StoreError, "uplinks[0]"),
        ({"uplinks": wan(1, address="198.18.1.300/24")}, StoreError, "uplinks[0].address"),
        ({"uplinks": wan(1) + wan(2)}, StoreError, "uplinks[1].name"),
        ({"uplinks": [{"name": "wan0", "interface": "eth0", "mode": "dhcp"}]}, StoreError, "uplinks"),
        ({"ports": {"nope": ["lan0"]}}, StoreError, "ports.nope"),
        ({"ports": {"corp": ["eth0"]}}, StoreError, "ports.corp[0]"),
        ({"ports": {"corp": ["lan0", "lan0"]}}, StoreError, "ports.corp[1]"),
        ({"ports": {"corp": ["this-is-far-too-long"]}}, StoreError, "ports.corp[0]"),
        ({"activation_code": "123"}, StoreError, "activation_code"),
        ({"name": "B1"}, StoreError, "name"),
    ]
    for change, exc, field in cases:
        args = {"name": "b9", "serial": "SN9", "uplinks": wan(9), **change}
        with raises(exc, field):
            acme.gateways.add("acme", args.pop("name"), **args)
    assert acme.gateways.list("acme") == [] and gen(acme) == 2


def test_serial_and_name_are_unique_across_enterprises(acme):
    acme.enterprises.create("globex")
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1))
    with raises(Conflict, "serial"):
        acme.gateways.add("globex", "g1", serial="SN1", uplinks=wan(2))
    with raises(Conflict, "name"):
        acme.gateways.add("globex", "b1", serial="SN2", uplinks=wan(2))
    acme.gateways.add("acme", "b2", serial="SN2", uplinks=wan(2))
    with raises(Conflict, "serial"):
        acme.gateways.update("b2", serial="SN1")


def test_system_ips_come_from_the_pool_and_are_not_reused_early(tmp_path):
    with Store(tmp_path / "c.db", system_pool="198.19.255.0/29") as s:
        assert s.ipam.controller_ip == IPv4Address("198.19.255.6")
        s.enterprises.create("acme")
        ips = [s.gateways.add("acme", f"b{i}", serial=f"SN{i}", uplinks=wan(i)).system_ip for i in range(1, 4)]
        assert [str(ip) for ip in ips] == ["198.19.255.1", "198.19.255.2", "198.19.255.3"]
        s.gateways.delete("b2")
        assert str(s.gateways.add("acme", "b4", serial="SN4", uplinks=wan(4)).system_ip) == "198.19.255.4"
    with Store(tmp_path / "c.db") as s:  # the cursor survives a restart
        assert str(s.gateways.add("acme", "b5", serial="SN5", uplinks=wan(5)).system_ip) == "198.19.255.5"
        # .6 is the controller's, .7 broadcast: wrap around to the freed .2
        assert str(s.gateways.add("acme", "b6", serial="SN6", uplinks=wan(6)).system_ip) == "198.19.255.2"
        with raises(Conflict, "system_ip"):
            s.gateways.add("acme", "b7", serial="SN7", uplinks=wan(7))
        ips = [g.system_ip for g in s.gateways.list("acme")]
        assert len(set(ips)) == len(ips) == 5 and s.ipam.controller_ip not in ips


def test_system_ips_are_unique_across_enterprises(acme):
    acme.enterprises.create("globex")
    a = acme.gateways.add("acme", "a1", serial="A1", uplinks=wan(1)).system_ip
    b = acme.gateways.add("globex", "g1", serial="G1", uplinks=wan(2)).system_ip
    assert a != b


def test_the_pool_of_a_database_cannot_change(tmp_path):
    Store(tmp_path / "c.db", system_pool="198.19.254.0/24").close()
    with raises(Conflict, "system_pool"):
        Store(tmp_path / "c.db", system_pool="198.19.255.0/24")
    with Store(tmp_path / "c.db") as s:
        assert str(s.ipam.system_pool) == "198.19.254.0/24"
    with raises(StoreError, "system_pool"):
        Store(tmp_path / "d.db", system_pool="224.0.0.0/24")


def test_generation_counts_changes_that_reach_configs(acme):
    g0 = gen(acme)
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), activation_code="first-code")
    assert gen(acme) == g0 + 1
    acme.gateways.update("b1", activation_code="second-code", serial="SN1b")  # not in any config
    assert gen(acme) == g0 + 1
    acme.gateways.update("b1", behind_nat=False)  # unchanged value
    assert gen(acme) == g0 + 1
    acme.gateways.update("b1", behind_nat=True)
    acme.gateways.update("b1", ports={"corp": ["lan0"]})
    acme.gateways.update("b1", uplinks=wan(7))
    assert gen(acme) == g0 + 4
    acme.enterprises.add_subnet("acme", "dmz", vni=200, cidr="198.51.100.0/24", gateway="198.51.100.1")
    acme.enterprises.delete_subnet("acme", "dmz")
    acme.gateways.delete("b1")
    assert gen(acme) == g0 + 7


def test_failed_write_changes_nothing(acme):
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), ports={"corp": ["lan0"]})
    before = (acme.gateways.get("b1"), gen(acme))
    with raises(StoreError, "ports.corp[0]"):  # the new uplink takes the LAN port's interface
        acme.gateways.update("b1", uplinks=[{**wan(1)[0], "interface": "lan0"}], behind_nat=True)
    with raises(StoreError, "uplinks[0].public"):
        acme.gateways.update("b1", uplinks=wan(1, public="224.0.0.5"))
    assert (acme.gateways.get("b1"), gen(acme)) == before


def test_a_write_that_does_not_render_is_rolled_back(acme, monkeypatch):
    """The last check: every write that reaches configs renders the whole enterprise before commit."""
    import controller.store_documents

    def broken(ent):
        raise ConfigError("gateway b2", ["peers[0].endpoint: not good"])

    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1))
    before = gen(acme)
    monkeypatch.setattr(controller.store_documents, "render", broken)
    with raises(StoreError, "config") as info:
        acme.gateways.add("acme", "b2", serial="SN2", uplinks=wan(2))
    assert "peers[0].endpoint" in info.value.message
    monkeypatch.undo()
    assert [g.name for g in acme.gateways.list("acme")] == ["b1"] and gen(acme) == before
    # the system IP that failed write took is handed out again: the cursor moved back with the rollback
    assert str(acme.gateways.add("acme", "b3", serial="SN3", uplinks=wan(3)).system_ip) == "198.19.255.2"


def test_enterprise_with_gateways_cannot_be_deleted(acme):
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1))
    with raises(Conflict, "enterprise"):
        acme.enterprises.delete("acme")
    acme.gateways.delete("b1")
    acme.enterprises.delete("acme")  # subnets go with it
    assert acme.enterprises.list() == []


# -- activation codes and tokens -----------------------------------------------------------------


def test_activation_code_is_kept_as_a_salted_scrypt_hash(acme, tmp_path):
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), activation_code="open-sesame-42")
    acme.gateways.add("acme", "b2", serial="SN2", uplinks=wan(2), activation_code="open-sesame-42")
    acme.gateways.add("acme", "b3", serial="SN3", uplinks=wan(3))
    rows = sqlite3.connect(tmp_path / "c.db").execute("SELECT activation_hash FROM gateways ORDER BY name").fetchall()
    assert rows[0][0].startswith("scrypt$") and rows[0][0] != rows[1][0] and rows[2][0] is None  # salted
    assert b"open-sesame-42" not in b"".join(p.read_bytes() for p in tmp_path.glob("c.db*"))
    assert acme.gateways.get("b1").has_activation_code
    assert acme.gateways.check_activation("SN1", "open-sesame-42")
    assert not acme.gateways.check_activation("SN1", "open-sesame-43")
    assert not acme.gateways.check_activation("SN1", None)
    assert not acme.gateways.check_activation("SN-unknown", "open-sesame-42")
    assert acme.gateways.check_activation("SN3", None)  # no code set: none needed
    acme.gateways.update("b1", activation_code=None)
    assert not acme.gateways.get("b1").has_activation_code and acme.gateways.check_activation("SN1", None)


def test_tokens_are_kept_as_sha256_only(store, tmp_path):
    token = store.tokens.create("admin")
    other = store.tokens.create("ci")
    assert token != other and len(token) > 40
    assert store.tokens.check(token) and store.tokens.check(other)
    assert not store.tokens.check(token + "x") and not store.tokens.check("")
    assert token.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("c.db*"))
    with raises(Conflict, "name"):
        store.tokens.create("admin")
    assert [t.name for t in store.tokens.list()] == ["admin", "ci"]
    store.tokens.revoke("admin")
    assert not store.tokens.check(token) and store.tokens.check(other)
    with raises(NotFound, "name"):
        store.tokens.revoke("admin")


# -- rendering and persistence -------------------------------------------------------------------


def test_config_for_is_the_full_mesh_with_the_generation(tmp_path):
    with Store(tmp_path / "c.db") as s:
        s.enterprises.create("acme", transport="esp")
        s.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
        s.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), ports={"corp": ["lan0"]})
        s.gateways.add("acme", "b2", serial="SN2", uplinks=wan(2))
        s.gateways.add("acme", "b3", serial="SN3", behind_nat=True,
                      uplinks=[{"name": "wan0", "interface": "eth0", "mode": "dhcp", "public": "203.0.113.9"}])
        s.enterprises.create("globex")
        s.gateways.add("globex", "g1", serial="G1", uplinks=wan(9))
        for name in ("b1", "b2", "b3"):
            cfg = parse_config(json.loads(dump_config(s.documents.config_for(name))))
            assert cfg.generation == s.enterprises.get("acme").generation == 5
            assert cfg.system_ip == s.gateways.get(name).system_ip
            assert sorted(p.name for p in cfg.peers) == sorted({"b1", "b2", "b3"} - {name})
            assert cfg.transport == "esp" and cfg.ipsec.auth == "ldevid" and all(p.psk is None for p in cfg.peers)
            assert {p.name: p.serial for p in cfg.peers} == {f"b{i}": f"SN{i}" for i in (1, 2, 3) if f"b{i}" != name}
        b1 = s.documents.config_for("b1")
        assert b1.subnets[0].ports == ("lan0",)
        assert {p.name: (str(p.endpoint), p.initiate) for p in b1.peers} == {
            "b2": ("198.18.2.2", "auto"), "b3": ("203.0.113.9", "never")}
        b3 = s.documents.config_for("b3")
        assert b3.behind_nat and {p.initiate for p in b3.peers} == {"always"}
        assert [p.name for p in s.documents.config_for("g1").peers] == []
        with raises(NotFound, "name"):
            s.documents.config_for("nope")


def test_psk_enterprises_give_each_pair_its_own_key(tmp_path):
    """No key is shared by the fleet: each gateway holds only the keys of its own pairs, the two ends
    of a pair hold the same one, and the enterprise secret is in no config."""
    with Store(tmp_path / "c.db") as s:
        s.enterprises.create("acme", transport="esp", ipsec={"psk": "enterprise-secret-0123456789"})
        for i in (1, 2, 3):
            s.gateways.add("acme", f"b{i}", serial=f"SN{i}", uplinks=wan(i))
        keys = {(name, p.name): p.psk for name in ("b1", "b2", "b3") for p in s.documents.config_for(name).peers}
        assert keys[("b1", "b2")] == keys[("b2", "b1")] and keys[("b1", "b3")] == keys[("b3", "b1")]
        assert len({keys[("b1", "b2")], keys[("b1", "b3")], keys[("b2", "b3")]}) == 3
        assert all("enterprise-secret" not in dump_config(s.documents.config_for(n)) for n in ("b1", "b2", "b3"))
        assert all(s.documents.config_for(n).ipsec.auth == "psk" for n in ("b1", "b2", "b3"))


def test_deleting_or_replacing_a_gateway_revokes_its_certificates(tmp_path):
    import datetime

    from controller.ca import CertificateAuthority

    ca = CertificateAuthority.create()
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    with Store(tmp_path / "c.db") as s:
        s.certificates.crl_signer = ca.crl
        s.enterprises.create("acme", transport="esp")
        for i in (1, 2, 3):
            s.gateways.add("acme", f"b{i}", serial=f"SN{i}", uplinks=wan(i))
        s.certificates.record_issued("SN1", 0x1001, later)
        s.certificates.record_issued("SN2", 0x2001, later)
        s.certificates.record_issued("SN2", 0x2002, later)  # renewed: both unexpired
        s.certificates.record_issued("SN3", 0x3001, later)
        assert s.documents.config_for("b1").ipsec.crl is None  # nothing revoked: no list
        gen = s.enterprises.get("acme").generation
        s.gateways.delete("b2")
        revoked = s.certificates.is_revoked
        assert revoked(0x2001) and revoked(0x2002) and not revoked(0x1001)
        crl = x509.load_pem_x509_crl(s.documents.config_for("b1").ipsec.crl.encode())
        assert crl.is_signature_valid(ca.cert.public_key())
        assert {r.serial_number for r in crl} == {0x2001, 0x2002}
        assert "b2" not in {p.name for p in s.documents.config_for("b1").peers}
        assert s.enterprises.get("acme").generation > gen
        s.gateways.update("b3", serial="SN3-new")  # the box was swapped: the old one's certificate goes
        assert s.certificates.is_revoked(0x3001)
        assert {p.serial for p in s.documents.config_for("b1").peers} == {"SN3-new"}
        assert {r.serial_number for r in x509.load_pem_x509_crl(s.documents.config_for("b1").ipsec.crl.encode())} == {
            0x2001, 0x2002, 0x3001}


def test_store_persists_across_reopen(tmp_path):
    path = tmp_path / "c.db"
    with Store(path) as s:
        assert s.db.journal_mode == "wal"
        s.enterprises.create("acme", transport="esp")
        s.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
        s.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), ports={"corp": ["lan0"]}, activation_code="abcdef")
        token = s.tokens.create("admin")
        before = (s.enterprises.get("acme"), s.enterprises.list_subnets("acme"), s.gateways.get("b1"),
                  s.documents.config_for("b1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Store(path) as s:
        assert s.db.schema_version() == SCHEMA_VERSION
        assert (s.enterprises.get("acme"), s.enterprises.list_subnets("acme"), s.gateways.get("b1"),
                s.documents.config_for("b1")) == before
        assert s.tokens.check(token) and s.gateways.check_activation("SN1", "abcdef")


def test_a_newer_schema_is_refused(tmp_path):
    Store(tmp_path / "c.db").close()
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute("INSERT INTO schema_migrations VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with raises(StoreError, "schema"):
        Store(tmp_path / "c.db")


def test_a_hub_makes_the_enterprise_run_evpn(acme):
    """Edges get an evpn section toward the hub's system IP (the reflector beside it) and the hub
    as an IKE peer; the hub gets every edge as a peer, and no subnets and no BGP of its own."""
    acme.gateways.add("acme", "b1", serial="SN1", uplinks=wan(1), ports={"corp": ["lan0"]})
    acme.gateways.add("acme", "b2", serial="SN2", uplinks=wan(2))
    assert acme.documents.config_for("b1").evpn is None  # no hub yet: static flood lists
    hub = acme.gateways.add("acme", "hub", serial="SNH", uplinks=wan(3), role="hub")
    assert hub.role == "hub" and acme.gateways.get("b1").role == "edge"
    b1, h = acme.documents.config_for("b1"), acme.documents.config_for("hub")
    assert b1.evpn is not None and [str(p.address) for p in b1.evpn.peers] == [str(hub.system_ip)]
    assert b1.evpn.asn == 65000 and {p.name for p in b1.peers} == {"b2", "hub"}
    assert h.evpn is None and h.subnets == () and {p.name for p in h.peers} == {"b1", "b2"}
    with raises(StoreError, "role"):
        acme.gateways.add("acme", "x", serial="SNX", uplinks=wan(4), role="spoke")
    with raises(StoreError, "enterprise"):  # a hub with LAN ports is refused, nothing is written
        acme.gateways.add("acme", "h2", serial="SNY", uplinks=wan(5), role="hub", ports={"corp": ["lan0"]})


def test_a_version_1_database_gains_the_role_column(tmp_path):
    """Migration 2 on a database made before roles existed: its gateways become edges."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    from controller.store_db import MIGRATIONS

    for stmt in MIGRATIONS[1]:
        db.execute(stmt)
    db.execute("INSERT INTO schema_migrations VALUES (1, 'then')")
    db.execute("INSERT INTO enterprises (name, transport, generation, created) VALUES ('acme', 'plain', 1, 'then')")
    db.execute("INSERT INTO gateways (enterprise_id, name, serial, system_ip, uplinks, created) VALUES "
               "(1, 'b1', 'SN1', '198.19.255.1', ?, 'then')", (json.dumps(wan(1)),))
    db.commit()
    db.close()
    with Store(path) as s:
        assert s.db.schema_version() == SCHEMA_VERSION and s.gateways.get("b1").role == "edge"

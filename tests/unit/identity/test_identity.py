import ssl
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from bootstrap.identity import (
    FileIdentityStore,
    IdentityError,
    discover_serial,
    factory_init,
    make_manufacturer_ca,
)


@pytest.fixture
def maker(tmp_path):
    return make_manufacturer_ca(tmp_path / "mfg")


def test_factory_init_makes_a_verifiable_idevid(tmp_path, maker):
    state = tmp_path / "state"
    cert = factory_init(state, "NSG-000123", maker)
    store = FileIdentityStore(state)
    assert store.serial() == "NSG-000123"
    cert.verify_directly_issued_by(maker[1])
    assert stat.S_IMODE((state / "idevid.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "mfg" / "manufacturer.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    key = store.private_key("idevid")
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    ctx = store.tls_context("idevid")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(IdentityError, match="already holds"):
        factory_init(state, "NSG-000124", maker)


def test_loose_key_permissions_are_refused(tmp_path, maker):
    state = tmp_path / "state"
    factory_init(state, "S1", maker)
    (state / "idevid.key").chmod(0o644)
    with pytest.raises(IdentityError, match="must be 0600"):
        FileIdentityStore(state).private_key("idevid")


def test_ldevid_is_stored_atomically(tmp_path, maker):
    state = tmp_path / "state"
    idevid = factory_init(state, "S1", maker)
    store = FileIdentityStore(state)
    assert store.ldevid() is None
    key = ec.generate_private_key(ec.SECP256R1())
    store.store_ldevid(idevid, key)  # any cert will do for the storage mechanics
    assert store.ldevid() == idevid
    assert stat.S_IMODE((state / "ldevid.key").stat().st_mode) == 0o600
    assert not list(state.glob("*.tmp"))


def test_serial_discovery_order(tmp_path, maker):
    dmi = tmp_path / "product_serial"
    dmi.write_text("ABC-42\n")
    state = tmp_path / "state"
    factory_init(state, "FROM-IDEVID", maker)
    store = FileIdentityStore(state)
    assert discover_serial(dmi, store, "i-0abc") == ("ABC-42", "dmi")
    dmi.write_text("To Be Filled By O.E.M.\n")
    assert discover_serial(dmi, store, "i-0abc") == ("FROM-IDEVID", "idevid")
    assert discover_serial(tmp_path / "missing", FileIdentityStore(tmp_path / "none"), "i-0abc") == (
        "i-0abc", "aws-instance-id")
    with pytest.raises(IdentityError, match="no serial number"):
        discover_serial(tmp_path / "missing", None, None)


def test_bad_serials(tmp_path, maker):
    for bad in ("", "x" * 65, "a\nb"):
        with pytest.raises(IdentityError, match="serial"):
            factory_init(tmp_path / f"s{len(bad)}", bad, maker)

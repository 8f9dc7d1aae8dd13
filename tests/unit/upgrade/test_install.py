"""Installing into the inactive slot: what the issue lists as refused leaves the box exactly as it was
(env block and both slots byte for byte) and is counted; a good bundle is written, read back, armed."""

from __future__ import annotations

import pytest

from nsg.upgrade import writer
from nsg.upgrade.errors import BoxError, BundleRefused, PolicyRefused
from nsg.upgrade.install import install
from nsg.upgrade.record import Phase, load_record

from .conftest import SLOT_SIZE, fake_ext4


def test_a_good_bundle_is_written_to_the_inactive_slot_and_armed(tbox):
    a_before = tbox.slot_a.read_bytes()
    done = install(tbox.bundle(version="1.3.0"), tbox.box, commit_after_s=120)
    assert (done.slot, done.what, done.manifest.version) == ("b", "upgrade 1.2.0 -> 1.3.0", "1.3.0")
    img = fake_ext4(seed=b"1.3.0")
    b = tbox.slot_b.read_bytes()
    assert b[:len(img)] == img and len(b) == SLOT_SIZE  # written in place: the partition keeps its size
    assert tbox.slot_a.read_bytes() == a_before  # the running slot is never touched
    assert tbox.env().as_dict() == {"nsg_slot": "a", "nsg_try": "b"}
    rec = load_record(tbox.box.record_path)
    assert rec.attempt.phase is Phase.ARMED and rec.attempt.commit_after_s == 120
    assert (rec.attempt.from_version, rec.attempt.target_version, rec.attempt.target_slot) == ("1.2.0", "1.3.0", "b")
    assert rec.slot_versions == {"b": "1.3.0"} and rec.refused == {}


def refused(tbox, bundle, exc_type, code, match, **kw):
    before = tbox.snapshot()
    with pytest.raises(exc_type, match=match) as err:
        install(bundle, tbox.box, **kw)
    assert err.value.code == code
    assert tbox.snapshot() == before  # nothing written: not the env, not a slot
    rec = load_record(tbox.box.record_path)
    assert rec.refused.get(code) == 1 and rec.last_refusal.code == code and rec.attempt is None
    return err.value


def test_bad_signature_is_refused(tbox):
    refused(tbox, tbox.bundle(key=tbox.other_key), BundleRefused, "bad-signature",
            "bundle signature does not verify with any release key in")


def test_wrong_hash_is_refused_before_anything_is_written(tbox):
    good = tbox.bundle(version="1.3.0")
    data = bytearray(good.read_bytes())
    idx = data.rfind(fake_ext4(seed=b"1.3.0")[-64:-32])  # a byte inside rootfs.img; the signed manifest unchanged
    assert idx > 0
    data[idx] ^= 0xFF
    good.write_bytes(bytes(data))
    refused(tbox, good, BundleRefused, "wrong-hash", "rootfs.img has SHA-256")


def test_a_bundle_for_another_model_is_refused(tbox):
    refused(tbox, tbox.bundle(model="nsg-other-arm64"), PolicyRefused, "wrong-model",
            "bundle is for model nsg-other-arm64, this box is nsg-atom-x86_64")


def test_a_downgrade_below_min_version_is_refused_even_when_allowed(tbox):
    tbox.release("2.1.0", min_version="2.0.0")
    refused(tbox, tbox.bundle(version="1.9.0"), PolicyRefused, "below-min-version", "older than 2.0.0",
            allow_downgrade=True)


def test_a_downgrade_needs_the_flag(tbox):
    tbox.release("2.1.0", min_version="2.0.0")
    bundle = tbox.bundle(version="2.0.0", min_version="1.0.0")
    refused(tbox, bundle, PolicyRefused, "downgrade", "--allow-downgrade installs it")
    assert install(bundle, tbox.box, allow_downgrade=True).what == "downgrade 2.1.0 -> 2.0.0"


def test_refusals_are_counted(tbox):
    bad = tbox.bundle(key=tbox.other_key)
    for _ in range(3):
        with pytest.raises(BundleRefused):
            install(bad, tbox.box)
    assert load_record(tbox.box.record_path).refused == {"bad-signature": 3}


def test_no_install_during_a_trial(tbox):
    install(tbox.bundle(version="1.3.0"), tbox.box)
    assert tbox.boot() == "b"
    tbox.release("1.3.0")
    with pytest.raises(BoxError, match=r"uncommitted trial of slot b") as err:
        install(tbox.bundle("c.nsgb", version="1.4.0"), tbox.box)
    assert err.value.code == "in-trial"
    assert tbox.slot_a.read_bytes() == b"A" * SLOT_SIZE  # the way back is intact


def test_reinstall_over_an_armed_slot_disarms_it_before_writing(tbox, monkeypatch):
    install(tbox.bundle(version="1.3.0"), tbox.box)
    assert tbox.env().get("nsg_try") == "b"
    seen = []
    real_write = writer.SlotWriter.write

    def write(self, chunk):
        seen.append(tbox.env().get("nsg_try"))  # while slot b is being overwritten
        real_write(self, chunk)

    monkeypatch.setattr(writer.SlotWriter, "write", write)
    install(tbox.bundle("c.nsgb", version="1.4.0"), tbox.box)
    assert seen and set(seen) == {""}
    assert tbox.env().get("nsg_try") == "b"
    assert load_record(tbox.box.record_path).slot_versions["b"] == "1.4.0"


def test_a_read_back_that_differs_is_not_armed(tbox, monkeypatch):
    monkeypatch.setattr("nsg.upgrade.writer.read_back", lambda dev, size: "0" * 64)
    env_before = tbox.box.grubenv.read_bytes()
    with pytest.raises(BoxError, match=r"reads back SHA-256 0+, written .*did not keep") as err:
        install(tbox.bundle(), tbox.box)
    assert err.value.code == "readback-mismatch"
    assert tbox.box.grubenv.read_bytes() == env_before
    rec = load_record(tbox.box.record_path)
    assert rec.attempt.phase is Phase.FAILED and "reads back" in rec.attempt.reason
    assert rec.slot_versions["b"] is None  # whatever slot b holds now, it is not a known version


def test_an_image_larger_than_the_slot(tbox):
    with pytest.raises(BoxError, match=r"the image is \d+ bytes, slot b .* holds 524288") as err:
        install(tbox.bundle(rootfs=fake_ext4(SLOT_SIZE + 1)), tbox.box)
    assert err.value.code == "slot-too-small"
    assert tbox.env().get("nsg_try") == ""


def test_a_missing_slot_partition(tbox):
    (tbox.box.partlabel_dir / "nsg-root-b").unlink()
    with pytest.raises(BoxError, match=r"no partition labelled nsg-root-b") as err:
        install(tbox.bundle(), tbox.box)
    assert err.value.code == "no-slot"


def test_a_box_without_release_info_cannot_apply_its_policy(tbox):
    tbox.box.release.unlink()
    with pytest.raises(BoxError, match=r"release.json is missing"):
        install(tbox.bundle(), tbox.box)


def test_the_mounted_root_is_never_a_slot(tmp_path):
    import os

    st = os.stat("/")
    if st.st_dev == 0:
        pytest.skip("/ has no device number here")
    # a block device node with /'s device number stands in for the root partition (mknod needs root)
    node = tmp_path / "rootdev"
    try:
        os.mknod(node, 0o600 | 0o060000, st.st_dev)
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    (tmp_path / "by").mkdir()
    os.symlink(node, tmp_path / "by" / "nsg-root-b")
    with pytest.raises(BoxError, match=r"is the mounted root file system"):
        writer.slot_device("b", tmp_path / "by")

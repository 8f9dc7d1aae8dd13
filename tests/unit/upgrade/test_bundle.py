"""The bundle format: image/bundle.py writes it, nsg.upgrade.bundle verifies it, streamed."""

from __future__ import annotations

import gzip
import io
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from image.bundle import BuildError, generate_key, load_private_key, main, make_manifest, sign, write_bundle
from nsg.upgrade.bundle import load_release_keys, verify_file, verify_stream
from nsg.upgrade.errors import BoxError, BundleRefused

from .conftest import MODEL, ROOTFS_SIZE, fake_ext4


def keys(tbox):
    return load_release_keys(tbox.box.keys_dir)


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def parts(tbox, version="1.3.0", rootfs: bytes | None = None):
    """(manifest bytes, signature, rootfs bytes) signed with the release key."""
    img = tbox.root / "parts.img"
    img.write_bytes(rootfs or fake_ext4())
    raw = make_manifest(img, version=version, min_version="1.0.0", model=MODEL).to_json()
    return raw, sign(raw, load_private_key(tbox.keys)), img.read_bytes()


def test_a_bundle_verifies_and_streams_its_image(tbox):
    path = tbox.bundle(version="1.3.0")
    got, seen = bytearray(), []
    v = verify_file(path, keys(tbox), sink=got.extend, progress=lambda d, t: seen.append((d, t)))
    assert v.manifest.version == "1.3.0" and v.manifest.model == MODEL
    assert v.key.path.name == "release-2025.pem"
    assert bytes(got) == fake_ext4(seed=b"1.3.0") and v.manifest.rootfs.size == ROOTFS_SIZE
    assert seen[-1] == (ROOTFS_SIZE, ROOTFS_SIZE)
    with tarfile.open(path) as tf:
        names = [m.name for m in tf.getmembers()]
    assert names == ["manifest.json", "manifest.sig", "rootfs.img"]


def test_signed_by_a_key_the_box_does_not_have(tbox):
    path = tbox.bundle(key=tbox.other_key)
    with pytest.raises(BundleRefused, match=r"bundle signature does not verify with any release key in .*keys "
                                            r"\(tried release-2025.pem") as err:
        verify_file(path, keys(tbox))
    assert (err.value.code, err.value.fault) == ("bad-signature", "bundle")


def test_a_manifest_changed_after_signing(tbox):
    raw, sig, img = parts(tbox, version="1.3.0")
    forged = raw.replace(b'"1.3.0"', b'"9.3.0"')
    with pytest.raises(BundleRefused, match=r"signature does not verify") as err:
        verify_stream(io.BytesIO(tar_of([("manifest.json", forged), ("manifest.sig", sig), ("rootfs.img", img)])),
                      keys(tbox))
    assert err.value.code == "bad-signature"


def test_a_rootfs_that_is_not_the_one_signed(tbox):
    raw, sig, img = parts(tbox)
    evil = bytearray(img)
    evil[-1] ^= 1
    sunk = bytearray()
    with pytest.raises(BundleRefused, match=r"rootfs.img has SHA-256 .*, the signed manifest says") as err:
        verify_stream(io.BytesIO(tar_of([("manifest.json", raw), ("manifest.sig", sig), ("rootfs.img", bytes(evil))])),
                      keys(tbox), sink=sunk.extend)
    assert err.value.code == "wrong-hash"


def test_a_rootfs_of_another_size(tbox):
    raw, sig, img = parts(tbox)
    with pytest.raises(BundleRefused, match=r"rootfs.img is .* bytes, the manifest says") as err:
        verify_stream(io.BytesIO(tar_of([("manifest.json", raw), ("manifest.sig", sig), ("rootfs.img", img + b"x")])),
                      keys(tbox))
    assert err.value.code == "wrong-size"


def test_the_policy_runs_before_the_image_is_read(tbox):
    sunk = bytearray()

    def refuse(m):
        raise BoxError("nope", f"not {m.version}")

    with pytest.raises(BoxError, match=r"not 1.3.0"):
        verify_file(tbox.bundle(), keys(tbox), check=refuse, sink=sunk.extend)
    assert not sunk


@pytest.mark.parametrize(("layout", "why"), [
    (lambda m, s, r: [("manifest.sig", s), ("manifest.json", m), ("rootfs.img", r)], "expected manifest.json next"),
    (lambda m, s, r: [("manifest.json", m), ("manifest.sig", s)], "ends before rootfs.img"),
    (lambda m, s, r: [("manifest.json", m), ("manifest.sig", s), ("rootfs.img", r), ("x", b"")], "unexpected member"),
    (lambda m, s, r: [("manifest.json", m + b" " * 70000), ("manifest.sig", s), ("rootfs.img", r)], "at most 65536"),
    (lambda m, s, r: [("manifest.json", m), ("manifest.sig", s * 5), ("rootfs.img", r)], "at most 256"),
])
def test_bundle_layout_refusals(tbox, layout, why):
    raw, sig, img = parts(tbox)
    with pytest.raises(BundleRefused, match=why) as err:
        verify_stream(io.BytesIO(tar_of(layout(raw, sig, img))), keys(tbox))
    assert err.value.code == "not-a-bundle"


@pytest.mark.parametrize(("mangle", "why"), [
    (lambda b: b[: len(b) // 2], "truncated|not a readable bundle"),
    (lambda b: b"not a tar at all" * 100, "not a readable bundle"),
    (gzip.compress, "not a readable bundle"),  # compressed tar is not the format
])
def test_not_a_bundle(tbox, mangle, why):
    data = mangle(tbox.bundle().read_bytes())
    with pytest.raises(BundleRefused, match=why) as err:
        verify_stream(io.BytesIO(data), keys(tbox))
    assert err.value.code == "not-a-bundle"


def test_symlink_member_is_refused(tbox):
    raw, sig, _ = parts(tbox)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("manifest.json", raw), ("manifest.sig", sig)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("rootfs.img")
        ti.type, ti.linkname = tarfile.SYMTYPE, "/dev/sda"
        tf.addfile(ti)
    with pytest.raises(BundleRefused, match=r"rootfs.img is not a regular file"):
        verify_stream(io.BytesIO(buf.getvalue()), keys(tbox))


def test_release_keys_rotate_and_bad_key_files_are_named(tbox, tmp_path):
    new_key, new_pub = generate_key(tmp_path / "k", "release-2026")
    (tbox.box.keys_dir / new_pub.name).write_bytes(new_pub.read_bytes())
    (tbox.box.keys_dir / "junk.pem").write_text("not a key")
    assert verify_file(tbox.bundle(key=new_key), keys(tbox)).key.path.name == "release-2026.pem"
    assert verify_file(tbox.bundle(), keys(tbox)).key.path.name == "release-2025.pem"
    for p in tbox.box.keys_dir.glob("release-*.pem"):
        p.unlink()
    with pytest.raises(BoxError, match=r"no usable release key in .*junk.pem.*cannot verify bundles") as err:
        load_release_keys(tbox.box.keys_dir)
    assert err.value.code == "no-release-keys"
    with pytest.raises(BoxError, match=r"cannot list release keys"):
        load_release_keys(tmp_path / "nowhere")


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    key, pub = generate_key(tmp_path, "r")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in pub.read_bytes() and b"PRIVATE KEY" in key.read_bytes()
    with pytest.raises(BuildError, match=r"never overwritten"):
        generate_key(tmp_path, "r")


def test_make_refuses_what_is_not_ext4(tbox):
    img = tbox.root / "x.img"
    img.write_bytes(b"\0" * 4096)
    with pytest.raises(BuildError, match=r"not an ext2/3/4 image"):
        make_manifest(img, version="1.0.0", min_version="1.0.0", model=MODEL)


def test_write_bundle_leaves_no_partial_file(tbox):
    raw, sig, _ = parts(tbox)
    out = tbox.root / "out.nsgb"
    with pytest.raises(FileNotFoundError):
        write_bundle(out, raw, sig, tbox.root / "missing.img", 0)
    assert not out.exists() and not list(tbox.root.glob(".out.nsgb*"))


def test_the_build_cli_end_to_end(tbox, tmp_path, capsys):
    assert main(["keygen", "--out-dir", str(tmp_path / "k"), "--name", "rel"]) == 0
    img = tmp_path / "rootfs.img"
    img.write_bytes(fake_ext4())
    out = tmp_path / "b.nsgb"
    assert main(["make", "--rootfs", str(img), "--version", "2.0.0", "--min-version", "1.5.0", "--model", MODEL,
                 "--key", str(tmp_path / "k" / "rel.key"), "--out", str(out), "--build", "v2.0.0-3-gabc",
                 "--created", "2025-06-01T12:00:00+00:00"]) == 0
    assert main(["verify", str(out), "--keys-dir", str(tmp_path / "k")]) == 0
    said = capsys.readouterr().out
    assert "ok: nsg-atom-x86_64 2.0.0 (min 1.5.0) built 2025-06-01T12:00:00+00:00 v2.0.0-3-gabc" in said
    assert main(["verify", str(out), "--keys-dir", str(tbox.box.keys_dir)]) == 1  # another key
    assert "signature does not verify" in capsys.readouterr().err
    assert main(["verify", str(out), "--keys-dir", str(tmp_path / "k"), "--model", "nsg-x"]) == 1
    assert "bundle is for model nsg-atom-x86_64, not nsg-x" in capsys.readouterr().err
    rel = tmp_path / "root" / "usr/share/nsg/release.json"
    assert main(["release-info", "--version", "2.0.0", "--min-version", "1.5.0", "--model", MODEL,
                 "--out", str(rel)]) == 0
    assert b'"min_version": "1.5.0"' in rel.read_bytes()
    # as `make bundle` runs it
    r = subprocess.run([sys.executable, "-m", "image.bundle", "verify", str(out), "--keys-dir", str(tmp_path / "k")],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3], check=False)
    assert r.returncode == 0, r.stderr

"""The upgrade bundle: reading and verifying it, streamed (the build side is image/bundle.py).

A bundle is an uncompressed POSIX tar with exactly three regular files, in this order::

    manifest.json   the Manifest (nsg.upgrade.manifest), at most 64 KiB
    manifest.sig    ECDSA P-256 / SHA-256 over the exact bytes of manifest.json, DER (at most 256 bytes)
    rootfs.img      the ext4 image of a root slot; its size and SHA-256 are in the manifest

Why this shape: tar needs nothing on the box but the standard library, and streams (a 1 GB image is
never held in memory or unpacked to disk); the manifest comes first so the signature is checked before
a byte of the image is read; one signature over a small manifest that pins the image's hash signs the
whole bundle, and checking it costs one ECDSA verify however large the image is. The manifest is
parsed only after its signature verified (an attacker's JSON never reaches the parser). Uncompressed:
ext4 images compress well, but a decompressor would be more unverified code in front of the signature
check; the download is the place for compression (HTTP Content-Encoding), not the format.

Release keys are the *.pem public keys (SubjectPublicKeyInfo) in /usr/share/nsg/release-keys of the
running image: a directory, so a release can ship the next key before bundles are signed with it and
a later release can drop a retired one. A signature is accepted from any key there.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nsg.upgrade.errors import BoxError, BundleRefused
from nsg.upgrade.manifest import Manifest, parse_manifest
from nsg.upgrade.paths import KEYS_DIR

MANIFEST, SIGNATURE, ROOTFS = "manifest.json", "manifest.sig", "rootfs.img"
MAX_MANIFEST = 64 * 1024
MAX_SIGNATURE = 256
CHUNK = 1 << 20
ECDSA = ec.ECDSA(hashes.SHA256())

Sink = Callable[[bytes], None]
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class ReleaseKey:
    path: Path
    key: ec.EllipticCurvePublicKey
    key_id: str  # first 16 hex digits of the SHA-256 of the SubjectPublicKeyInfo (DER)


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    key: ReleaseKey


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def load_release_keys(directory: Path = KEYS_DIR) -> list[ReleaseKey]:
    """Every usable P-256 key in the directory; none usable is the image's fault (it cannot verify)."""
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".pem")
    except OSError as exc:
        raise BoxError("no-release-keys", f"cannot list release keys in {directory}: {exc.strerror}") from None
    keys, problems = [], []
    for path in files:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, OSError) as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            problems.append(f"{path.name}: not an ECDSA P-256 public key")
            continue
        keys.append(ReleaseKey(path, key, key_id(key)))
    if not keys:
        why = f" ({'; '.join(problems)})" if problems else ""
        raise BoxError("no-release-keys",
                       f"no usable release key in {directory}{why}: this image cannot verify bundles")
    return keys


def verify_signature(manifest: bytes, signature: bytes, keys: list[ReleaseKey]) -> ReleaseKey:
    for k in keys:
        try:
            k.key.verify(signature, manifest, ECDSA)
        except InvalidSignature:
            continue
        return k
    where = keys[0].path.parent if keys else "(no keys)"
    tried = ", ".join(f"{k.path.name} ({k.key_id})" for k in keys)
    raise BundleRefused("bad-signature", f"bundle signature does not verify with any release key in {where} "
                                         f"(tried {tried})")


class _Reader:
    """The bundle's members, in order, from a stream (tarfile's "r|" mode: no seeking, no extraction)."""

    def __init__(self, fileobj: BinaryIO, where: str):
        self.where = where
        # "r|": a stream of uncompressed tar only; the caller owns (and closes) fileobj
        self.tf = tarfile.open(fileobj=fileobj, mode="r|")  # noqa: SIM115

    def member(self, name: str, max_size: int | None = None) -> tarfile.TarInfo:
        m = self.tf.next()
        if m is None:
            raise BundleRefused("not-a-bundle", f"{self.where} ends before {name}")
        if m.name != name:
            raise BundleRefused("not-a-bundle", f"{self.where}: expected {name} next, found {m.name!r}")
        if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise BundleRefused("not-a-bundle", f"{self.where}: {name} is not a regular file")
        if max_size is not None and m.size > max_size:
            raise BundleRefused("not-a-bundle", f"{self.where}: {name} is {m.size} bytes, at most {max_size} allowed")
        return m

    def read(self, m: tarfile.TarInfo) -> bytes:
        f = self.tf.extractfile(m)
        assert f is not None  # a regular file always has one
        data = f.read()
        if len(data) != m.size:
            raise BundleRefused("not-a-bundle", f"{self.where}: {m.name} is truncated")
        return data

    def end(self) -> None:
        extra = self.tf.next()
        if extra is not None:
            raise BundleRefused("not-a-bundle", f"{self.where}: unexpected member {extra.name!r} after {ROOTFS}")


def verify_stream(fileobj: BinaryIO, keys: list[ReleaseKey], *, where: str = "bundle",
                  check: Callable[[Manifest], None] | None = None, expect: Manifest | None = None,
                  sink: Sink | None = None, progress: Progress | None = None) -> Verified:
    """Verify a bundle from a stream, in this order: signature, ``check`` (the box's policy, before the
    image is read), then the image's size and SHA-256 while ``sink`` gets every chunk of it. ``expect``:
    the manifest an earlier pass verified (a file swapped in between is refused). Raises BundleRefused,
    or what ``check`` or ``sink`` raise. The sink has seen an image whose hash is only known good when
    this returns: whatever it wrote must not be used before."""
    try:
        r = _Reader(fileobj, where)
        raw = r.read(r.member(MANIFEST, MAX_MANIFEST))
        sig = r.read(r.member(SIGNATURE, MAX_SIGNATURE))
        key = verify_signature(raw, sig, keys)
        manifest = parse_manifest(raw)
        if expect is not None and manifest != expect:
            raise BundleRefused("bundle-changed", f"{where} changed while it was being installed")
        if check is not None:
            check(manifest)
        m = r.member(ROOTFS)
        if m.size != manifest.rootfs.size:
            raise BundleRefused("wrong-size", f"{where}: {ROOTFS} is {m.size} bytes, the manifest says "
                                              f"{manifest.rootfs.size}")
        _hash_through(r, m, manifest, sink, progress)
        r.end()
    except tarfile.TarError as exc:
        raise BundleRefused("not-a-bundle", f"{where} is not a readable bundle (tar): {exc}") from None
    except OSError as exc:  # reading the file (a sink reports its own errors as UpgradeError)
        raise BoxError("io", f"reading {where}: {exc.strerror or exc}") from None
    return Verified(manifest, key)


def _hash_through(r: _Reader, m: tarfile.TarInfo, manifest: Manifest, sink: Sink | None,
                  progress: Progress | None) -> None:
    f = r.tf.extractfile(m)
    assert f is not None
    h = hashlib.sha256()
    done = 0
    while done < m.size:
        chunk = f.read(min(CHUNK, m.size - done))
        if not chunk:
            raise BundleRefused("not-a-bundle", f"{r.where}: {ROOTFS} is truncated at {done} of {m.size} bytes")
        h.update(chunk)
        if sink is not None:
            sink(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, m.size)
    if h.hexdigest() != manifest.rootfs.sha256:
        raise BundleRefused("wrong-hash", f"{r.where}: {ROOTFS} has SHA-256 {h.hexdigest()}, the signed manifest "
                                          f"says {manifest.rootfs.sha256}")


def verify_file(path: Path, keys: list[ReleaseKey], **kw) -> Verified:
    try:
        f = path.open("rb")
    except OSError as exc:
        raise BundleRefused("not-a-bundle", f"cannot open bundle {path}: {exc.strerror}") from None
    with f:
        return verify_stream(f, keys, where=str(path), **kw)

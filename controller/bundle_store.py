"""Upgrade bundles on the controller: received from the admin API, verified, kept by SHA-256, served to
gateways by the device site. A bundle is kept only if it verifies with one of the release keys the
controller was given (`nsg-controller serve --release-keys DIR`), exactly as a box verifies it
(nsg.upgrade.bundle: the signature over the manifest, then the image's size and SHA-256): a bundle the
controller serves is one some box may take. Which box may (model, version policy) is the box's to say."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Protocol

from nsg.upgrade.bundle import ReleaseKey, Verified, verify_file
from nsg.upgrade.errors import UpgradeError

MAX_BUNDLE = 4 << 30  # bytes; the gateway refuses larger ones too (nsg.upgrade.download.MAX_BUNDLE)
CHUNK = 1 << 20


class BundleUploadError(ValueError):
    """The uploaded bytes are not a bundle we take (the uploader's fault); ``code`` is nsg.upgrade's."""

    def __init__(self, message: str, code: str = "not-a-bundle"):
        super().__init__(message)
        self.code = code


class _Stream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


def bundle_path(directory: Path, sha256: str) -> Path:
    return directory / f"{sha256}.nsgb"


async def receive(stream: _Stream, directory: Path, keys: list[ReleaseKey],
                  limit: int = MAX_BUNDLE) -> tuple[str, int, Verified]:
    """Stream an upload to ``directory`` while hashing it, verify it; returns (sha256, size, what verified).
    The file is kept as <sha256>.nsgb only if it verifies."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = directory / f".upload-{os.getpid()}-{id(stream)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    h = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := await stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BundleUploadError(f"larger than {limit} bytes", "too-big")
                h.update(chunk)
                f.write(chunk)
        if size == 0:
            raise BundleUploadError("the body is empty; send the bundle (make bundle makes one)")
        try:
            verified = await asyncio.to_thread(verify_file, tmp, keys)
        except UpgradeError as exc:
            raise BundleUploadError(str(exc).replace(str(tmp), "the bundle"), exc.code) from None
        sha = h.hexdigest()
        os.replace(tmp, bundle_path(directory, sha))
        return sha, size, verified
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def prune(directory: Path, keep: set[str]) -> list[str]:
    """Remove bundles no enterprise names any more; returns the hashes removed."""
    gone = []
    for p in directory.glob("*.nsgb"):
        if p.stem not in keep:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            gone.append(p.stem)
    return gone

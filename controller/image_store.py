"""App image tarballs on the controller: received from the admin API, kept by SHA-256, served to
gateways by the device site. A tarball is accepted only if it is what `docker save` makes: a tar
with a manifest.json naming at least one tagged image (its references are what apps may run)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Protocol

MAX_IMAGE = 4 << 30  # bytes; the gateway refuses larger ones too (containers/image_fetch.py)
CHUNK = 1 << 20


class ImageUploadError(ValueError):
    """The uploaded bytes are not an image tarball we take (the uploader's fault)."""


class _Stream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


def image_path(directory: Path, sha256: str) -> Path:
    return directory / f"{sha256}.tar"


def references(path: Path) -> list[str]:
    """The image references a `docker save` tarball carries (manifest.json's RepoTags)."""
    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.getmember("manifest.json")
            f = tar.extractfile(member)
            if f is None or member.size > 1 << 20:
                raise ImageUploadError("manifest.json is not a small regular file")
            manifest = json.loads(f.read())
    except KeyError:
        raise ImageUploadError("not a `docker save` tarball: no manifest.json") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageUploadError(f"not a tar archive: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageUploadError(f"manifest.json is not JSON: {exc}") from None
    if not isinstance(manifest, list):
        raise ImageUploadError("manifest.json is not a list of images")
    refs: list[str] = []
    for entry in manifest:
        tags = entry.get("RepoTags") if isinstance(entry, dict) else None
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ImageUploadError("manifest.json: RepoTags is not a list of strings")
        refs.extend(tags or ())
    return refs


async def receive(stream: _Stream, directory: Path, limit: int = MAX_IMAGE) -> tuple[str, int, list[str]]:
    """Stream an upload to ``directory`` while hashing it; returns (sha256, size, references).
    The file is kept as <sha256>.tar only if it is a tagged image tarball."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    h = hashlib.sha256()
    size = 0
    fd = os.open(directory / f".upload-{os.getpid()}-{id(stream)}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    tmp = directory / f".upload-{os.getpid()}-{id(stream)}"
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := await stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ImageUploadError(f"larger than {limit} bytes")
                h.update(chunk)
                f.write(chunk)
        if size == 0:
            raise ImageUploadError("the body is empty; send the `docker save` tarball")
        refs = await asyncio.to_thread(references, tmp)
        if not refs:
            raise ImageUploadError("the tarball tags no image (docker save NAME:TAG makes a tagged one)")
        sha = h.hexdigest()
        os.replace(tmp, image_path(directory, sha))
        return sha, size, refs
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def prune(directory: Path, keep: set[str]) -> list[str]:
    """Remove tarballs no enterprise names any more; returns the hashes removed."""
    gone = []
    for p in directory.glob("*.tar"):
        if p.stem not in keep:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            gone.append(p.stem)
    return gone

"""Image tarballs (`docker save`) for apps: read, hash-checked, then loaded. Nothing reaches the
engine unless its bytes hash to the SHA-256 the desired state names."""

from __future__ import annotations

import hashlib
from urllib.parse import unquote, urlparse

MAX_IMAGE_BYTES = 4 << 30  # a tenant app image larger than this is refused
CHUNK = 1 << 20


class ImageError(RuntimeError):
    """The image could not be had as named: unreadable, too large, or not the bytes promised."""


def read_verified(url: str, sha256: str) -> bytes:
    """The tarball at ``url`` (file:///...), if it hashes to ``sha256``."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ImageError(f"image source {url!r}: only file:/// URLs are supported")
    path = unquote(parsed.path)
    h = hashlib.sha256()
    parts = []
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise ImageError(f"image {path}: larger than {MAX_IMAGE_BYTES >> 30} GiB")
                h.update(chunk)
                parts.append(chunk)
    except OSError as exc:
        raise ImageError(f"image {path}: {exc.strerror}") from None
    if h.hexdigest() != sha256:
        raise ImageError(f"image {path}: SHA-256 is {h.hexdigest()}, the desired state says {sha256}; not loaded")
    return b"".join(parts)

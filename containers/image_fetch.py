"""Image tarballs (`docker save`) for apps: fetched, hash-checked, then loaded. Nothing reaches the
engine unless its bytes hash to the SHA-256 the desired state names.

Sources: ``https://`` (the controller's device site: the gateway's LDevID as client certificate,
the server checked against the controller CA; downloads are kept in a cache directory by hash)
or ``file:///`` (a local file, checked where it lies).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

MAX_IMAGE_BYTES = 4 << 30  # a tenant app image larger than this is refused
CHUNK = 1 << 20
TIMEOUT = 30.0  # seconds without progress before a download is given up

TlsContext = Callable[[], ssl.SSLContext | None]  # None: no device identity (yet)


class ImageError(RuntimeError):
    """The image could not be had as named: unreachable, too large, or not the bytes promised."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:
                raise ImageError(f"image {path}: larger than {MAX_IMAGE_BYTES >> 30} GiB")
            h.update(chunk)
    return h.hexdigest()


def _mismatch(where: str, got: str, want: str) -> ImageError:
    return ImageError(f"image {where}: SHA-256 is {got}, the desired state says {want}; not loaded")


def _download(url: str, dest: Path, sha256: str, tls: TlsContext | None) -> None:
    ctx = tls() if tls is not None else None
    if ctx is None:
        raise ImageError(f"image {url}: an https source needs the gateway's device identity, and it has none")
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    size = 0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(url, timeout=TIMEOUT) as resp, open(part, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise ImageError(f"image {url}: larger than {MAX_IMAGE_BYTES >> 30} GiB")
                h.update(chunk)
                f.write(chunk)
        if h.hexdigest() != sha256:
            raise _mismatch(url, h.hexdigest(), sha256)
        os.replace(part, dest)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"image {url}: the controller answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        raise ImageError(f"image {url}: {getattr(exc, 'reason', exc)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def obtain(url: str, sha256: str, cache: Path, tls: TlsContext | None = None) -> Path:
    """A local file holding exactly the tarball ``sha256`` names, fetched from ``url`` if need be."""
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        path = Path(unquote(parsed.path))
        try:
            got = _digest(path)
        except OSError as exc:
            raise ImageError(f"image {path}: {exc.strerror}") from None
        if got != sha256:
            raise _mismatch(str(path), got, sha256)
        return path
    if parsed.scheme != "https" or not parsed.hostname:
        raise ImageError(f"image source {url!r}: only https:// and file:/// URLs are supported")
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = cache / f"{sha256}.tar"
    if dest.exists():
        try:
            if _digest(dest) == sha256:
                return dest
        except OSError:
            pass
        dest.unlink(missing_ok=True)  # a damaged cache entry: fetch it again
    _download(url, dest, sha256, tls)
    return dest


def prune(cache: Path, keep: Iterable[str]) -> None:
    """Drop cached tarballs no app needs any more."""
    wanted = set(keep)
    if cache.is_dir():
        for p in cache.glob("*.tar"):
            if p.stem not in wanted:
                p.unlink(missing_ok=True)

"""Fetching a bundle over https onto the data partition, before anything verifies or installs it.

TLS is always verified (certificate chain and host name) against the controller's CA when the box has
one (STATE/identity/controller-ca.pem), else the given --ca file, else the system CA store; there is
no way to turn it off. Only https: a redirect to another scheme is refused too. The file goes to the
data partition first (the bundle is verified twice and read back from there, never from the network
stream), after a space check that keeps a reserve free for the daemon's own state. The download is no
trust decision: the bundle's signature is; TLS keeps what the box downloads private and the server honest
about which file it serves. The daemon's upgrade agent (nsg/upgrade/agent.py) passes its own client
context (the box's LDevID, for the controller's device site, with no proxy in between) and the size and
SHA-256 the controller gave, so a file that is not the one it was told of is refused before it is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from nsg import __version__
from nsg.upgrade.errors import BoxError, DownloadError, RequestRefused

MAX_BUNDLE = 4 << 30  # bytes: larger than any root slot
RESERVE = 64 << 20  # bytes left free on the data partition
CHUNK = 1 << 20
DOWNLOAD_NAME = "bundle.download"


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise RequestRefused("not-https", f"{req.full_url} redirects to {newurl}: only https is allowed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def download(url: str, dest_dir: Path, *, cafile: Path | None = None, context: ssl.SSLContext | None = None,
             expect_size: int | None = None, expect_sha256: str | None = None, max_bytes: int = MAX_BUNDLE,
             reserve: int = RESERVE, timeout: float = 30.0,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Stream ``url`` to dest_dir/bundle.download; return its path. Raises UpgradeError, leaving no file.
    ``context``: a client TLS context to use as it is (it verifies the server; no proxy is used with it);
    ``expect_size``/``expect_sha256``: what the file must be (DownloadError "download-mismatch" else)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RequestRefused("not-https", f"{url}: only https:// URLs (or a local file) can be installed")
    trust = str(cafile) if cafile else "the given client context's CA" if context else "the system CA store"
    if context is not None:
        if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
            raise BoxError("no-ca", "the TLS context given does not verify the server")
        ctx = context
    else:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
        except (OSError, ssl.SSLError) as exc:
            raise BoxError("no-ca", f"cannot load the CA {trust}: {exc}") from None
    handlers: list = [urllib.request.HTTPSHandler(context=ctx), _HttpsOnlyRedirects()]
    if context is not None:
        handlers.append(urllib.request.ProxyHandler({}))  # the device site is reached directly
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers={"User-Agent": f"nsg/{__version__}", "Accept-Encoding": "identity"})
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError("http", f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise DownloadError("tls", f"{parts.hostname}'s TLS certificate does not verify against {trust}: "
                                       f"{exc.reason.verify_message}") from None
        raise DownloadError("download-failed", f"{url}: {exc.reason}") from None
    except (OSError, ssl.SSLError) as exc:
        raise DownloadError("download-failed", f"{url}: {exc}") from None
    with resp:
        return _save(resp, url, dest_dir, min(max_bytes, expect_size or max_bytes), reserve, progress,
                     expect_size, expect_sha256)


def _save(resp, url: str, dest_dir: Path, max_bytes: int, reserve: int,
          progress: Callable[[int, int], None] | None, expect_size: int | None = None,
          expect_sha256: str | None = None) -> Path:
    length_hdr = resp.headers.get("Content-Length")
    length = int(length_hdr) if length_hdr and length_hdr.isdigit() else None
    if expect_size is not None and length is not None and length != expect_size:
        raise DownloadError("download-mismatch", f"{url} is {length} bytes, not the {expect_size} expected")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        room = free_bytes(dest_dir) - reserve
    except OSError as exc:
        raise BoxError("io", f"{dest_dir}: {exc.strerror}") from None
    if length is not None and length > max_bytes:
        raise DownloadError("too-big", f"{url} is {length} bytes; a bundle is at most {max_bytes}")
    if length is not None and length > room:
        raise BoxError("no-space", f"{url} is {length} bytes; {dest_dir} has {max(room, 0)} to spare "
                                   f"(keeping {reserve} free)")
    limit = min(max_bytes, room)
    path = dest_dir / DOWNLOAD_NAME
    done = 0
    digest = hashlib.sha256()
    try:
        with _create(path) as out:
            while chunk := _read(resp, url):
                done += len(chunk)
                if done > limit:
                    raise (DownloadError("too-big", f"{url} is over {max_bytes} bytes") if limit == max_bytes else
                           BoxError("no-space", f"{url} does not fit in {dest_dir} (keeping {reserve} free)"))
                _write(out, chunk, path)
                digest.update(chunk)
                if progress is not None:
                    progress(done, length or 0)
            _write(out, b"", path, sync=True)
        if length is not None and done != length:
            raise DownloadError("download-failed", f"{url}: got {done} of {length} bytes")
        if expect_size is not None and done != expect_size:
            raise DownloadError("download-mismatch", f"{url}: got {done} bytes, not the {expect_size} expected")
        if expect_sha256 is not None and digest.hexdigest() != expect_sha256:
            raise DownloadError("download-mismatch", f"{url} has SHA-256 {digest.hexdigest()}, not the "
                                                     f"{expect_sha256} expected")
    except BaseException:  # cleanup only: re-raised
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def _create(path: Path):
    try:
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb")
    except OSError as exc:
        raise BoxError("io", f"cannot create {path}: {exc.strerror}") from None


def _read(resp, url: str) -> bytes:
    try:
        return resp.read(CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError("download-failed", f"{url}: {exc or type(exc).__name__}") from None


def _write(out, chunk: bytes, path: Path, *, sync: bool = False) -> None:
    try:
        out.write(chunk)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise BoxError("io", f"writing {path}: {exc.strerror}") from None

"""A file as a source of bootstrap servers: removable media (RFC 8572 section 4, "Removable Storage") or any
directory the caller names, holding ``nsg-bootstrap.json``. The same document, delivered as
instance user-data, is what the metadata source (imds.py) reads.

The document (nsg's own format, validated strictly: unknown keys, wrong types and duplicate
keys are errors, so a typo is never silently ignored)::

    {
      "nsg-bootstrap": 1,
      "bootstrap-servers": [
        {"uri": "https://bootstrap.example.net:8443", "trust-anchor": "<X.509 cert, base64 DER or PEM>"}
      ],
      "bootstrapping-data": {
        "conveyed-information": "<base64 CMS>",
        "owner-certificate": "<base64 CMS>",
        "ownership-voucher": "<base64 CMS>"
      }
    }

At least one of "bootstrap-servers" (non-empty) and "bootstrapping-data" must be present.
"trust-anchor" is optional; without it the server is untrusted (RFC 8572 section 5.3).
"bootstrapping-data" is RFC 8572 section 3's signed data, all three artifacts required; it
is carried to the SZTP client unverified (signature checks are section 5.4's job there).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    LocalDiscoveryError,
    RemoteProtocolError,
    SignedBootstrappingData,
    check_bootstrap_uri,
)

log = logging.getLogger("bootstrap.sources.file")

FILE_NAME = "nsg-bootstrap.json"
FORMAT_KEY = "nsg-bootstrap"
FORMAT_VERSION = 1
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_SERVERS = 32
# File systems of USB sticks, SD cards and optical media (for mount point discovery).
REMOVABLE_FSTYPES = frozenset({"vfat", "msdos", "exfat", "iso9660", "udf"})

_TOP_KEYS = {FORMAT_KEY, "bootstrap-servers", "bootstrapping-data"}
_SERVER_KEYS = {"uri", "trust-anchor"}
_DATA_KEYS = {"conveyed-information": "conveyed_information", "owner-certificate": "owner_certificate",
              "ownership-voucher": "ownership_voucher"}


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise RemoteProtocolError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_bootstrap_document(data: bytes, *, source: str, origin: str) -> list[BootstrapServer]:
    """Validate an nsg bootstrap document; ``origin`` names it in errors and inline URIs.

    Inline bootstrapping data comes first (it needs no network), then the servers in order.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise RemoteProtocolError(f"{origin}: {len(data)} octets, more than the {MAX_DOCUMENT_BYTES} allowed")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"{origin}: not UTF-8 ({exc.reason} at octet {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(f"{origin}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{origin}: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError(f"{origin}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise RemoteProtocolError(f"{origin}: not acceptable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RemoteProtocolError(f"{origin}: the document must be a JSON object")
    _keys(doc, _TOP_KEYS, origin)
    version = doc.get(FORMAT_KEY)
    if type(version) is not int or version != FORMAT_VERSION:
        raise RemoteProtocolError(f"{origin}: {FORMAT_KEY!r} must be {FORMAT_VERSION}, got {version!r}")
    out: list[BootstrapServer] = []
    if "bootstrapping-data" in doc:
        out.append(BootstrapServer(origin, source, inline=_data(doc["bootstrapping-data"], origin)))
    servers = doc.get("bootstrap-servers", [])
    if not isinstance(servers, list):
        raise RemoteProtocolError(f"{origin}: 'bootstrap-servers' must be a list")
    if "bootstrap-servers" in doc and not servers:
        raise RemoteProtocolError(f"{origin}: 'bootstrap-servers' is empty")
    if len(servers) > MAX_SERVERS:
        raise RemoteProtocolError(f"{origin}: more than {MAX_SERVERS} bootstrap servers")
    for i, entry in enumerate(servers):
        out.append(_server(entry, f"{origin}: bootstrap-servers[{i}]", source))
    if not out:
        raise RemoteProtocolError(f"{origin}: needs 'bootstrap-servers' or 'bootstrapping-data'")
    return out


def _keys(obj: dict, allowed: set[str] | dict, where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise RemoteProtocolError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _server(entry: object, where: str, source: str) -> BootstrapServer:
    if not isinstance(entry, dict):
        raise RemoteProtocolError(f"{where}: must be an object with 'uri'")
    _keys(entry, _SERVER_KEYS, where)
    uri = entry.get("uri")
    if not isinstance(uri, str):
        raise RemoteProtocolError(f"{where}: 'uri' must be a string")
    check_bootstrap_uri(uri, f"{where} uri")
    anchor = entry.get("trust-anchor")
    if anchor is not None and not isinstance(anchor, str):
        raise RemoteProtocolError(f"{where}: 'trust-anchor' must be a string")
    return BootstrapServer(uri, source, trust_anchor_der=None if anchor is None else _certificate(anchor, where))


def _certificate(text: str, where: str) -> bytes:
    """An X.509 certificate as PEM or base64 DER -> DER, parsed to be sure it is one."""
    try:
        if text.lstrip().startswith("-----BEGIN"):
            cert = x509.load_pem_x509_certificate(text.encode("ascii"))
        else:
            cert = x509.load_der_x509_certificate(_b64(text, f"{where} trust-anchor"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise RemoteProtocolError(f"{where}: 'trust-anchor' is not an X.509 certificate ({exc})") from None
    return cert.public_bytes(Encoding.DER)


def _data(obj: object, origin: str) -> SignedBootstrappingData:
    where = f"{origin}: bootstrapping-data"
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{where} must be an object")
    _keys(obj, _DATA_KEYS, where)
    missing = sorted(set(_DATA_KEYS) - set(obj))
    if missing:
        raise RemoteProtocolError(f"{where}: signed data needs {', '.join(missing)} (RFC 8572 section 3)")
    values = {}
    for key, attr in _DATA_KEYS.items():
        if not isinstance(obj[key], str):
            raise RemoteProtocolError(f"{where}: {key!r} must be a base64 string")
        values[attr] = _b64(obj[key], f"{where} {key}")
    return SignedBootstrappingData(**values)


def _b64(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise RemoteProtocolError(f"{where}: not valid base64") from None
    if not raw:
        raise RemoteProtocolError(f"{where}: empty")
    return raw


def removable_mount_points(mounts: str, fstypes: frozenset[str] = REMOVABLE_FSTYPES) -> list[Path]:
    """Mount points of removable-media file systems, from /proc/self/mounts text (fstab
    format, proc(5): octal escapes for blanks in paths)."""
    out = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] in fstypes:
            out.append(Path(_unescape_octal(fields[1])))
    return out


def _unescape_octal(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        chunk = text[i + 1 : i + 4]
        if text[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class FileSource:
    """Look for ``nsg-bootstrap.json`` in each directory, in order. ``directories=None``
    means the mount points of removable media (from /proc/self/mounts) at discovery time."""

    name = "file"

    def __init__(self, directories: Sequence[Path | str] | None = None, *, file_name: str = FILE_NAME,
                 mounts_file: Path = Path("/proc/self/mounts")) -> None:
        self.directories = None if directories is None else [Path(d) for d in directories]
        self.file_name = file_name
        self.mounts_file = mounts_file

    def _candidates(self) -> list[Path]:
        if self.directories is not None:
            return [d / self.file_name for d in self.directories]
        try:
            mounts = self.mounts_file.read_text()
        except OSError as exc:
            raise LocalDiscoveryError(f"cannot read {self.mounts_file}: {exc}") from None
        return [d / self.file_name for d in removable_mount_points(mounts)]

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]:
        found: list[BootstrapServer] = []
        errors: list[RemoteProtocolError] = []
        for path in self._candidates():
            try:
                with path.open("rb") as f:
                    data = f.read(MAX_DOCUMENT_BYTES + 1)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot read %s: %s", path, exc)
                continue
            try:
                found += parse_bootstrap_document(data, source=self.name, origin=path.resolve().as_uri())
            except RemoteProtocolError as exc:
                log.warning("ignoring %s: %s", path, exc)
                errors.append(exc)
        if not found and errors:
            raise errors[0]
        return found

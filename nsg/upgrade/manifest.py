"""What a bundle says about itself (manifest.json), what a running image says about itself
(/usr/share/nsg/release.json), and how versions compare.

Versions are semantic versions (semver.org 2.0.0 precedence): MAJOR.MINOR.PATCH, an optional
pre-release (``1.4.0-rc.1`` sorts before ``1.4.0``) and optional build metadata (``+g1a2b3c``), which
names the build but does not order it.
"""

from __future__ import annotations

import json
import re
from functools import total_ordering
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from nsg.upgrade.errors import BoxError, BundleRefused
from nsg.upgrade.paths import RELEASE_FILE

FORMAT = 1  # the manifest format this code writes and reads; a newer one is refused by name
PRODUCT = "nsg"

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z")


@total_ordering
class Version:
    __slots__ = ("_key", "text")

    def __init__(self, text: str):
        m = _SEMVER.match(text)
        if not m:
            raise ValueError(f"version {text!r} is not MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]")
        self.text = text
        pre = m.group(4)
        # a release sorts after all its pre-releases; numeric identifiers before alphanumeric ones
        pre_key = (1,) if pre is None else (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
        self._key = (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def _semver(text: str) -> str:
    Version(text)
    return text


SemVer = Annotated[str, AfterValidator(_semver)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Release(_Frozen):
    """What a bundle and a running image both say: what it is, for which hardware, which version."""

    format: Literal[1] = FORMAT
    product: Literal["nsg"] = PRODUCT
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # e.g. nsg-atom-x86_64
    version: SemVer
    min_version: SemVer  # see nsg.upgrade.policy: the lower end of the compatibility window
    build: str = Field(default="", max_length=200)  # where it came from, e.g. `git describe`

    @model_validator(mode="after")
    def _window(self):
        if Version(self.min_version) > Version(self.version):
            raise ValueError(f"min_version {self.min_version} is newer than version {self.version}")
        return self

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1).encode() + b"\n"


class Rootfs(_Frozen):
    file: Literal["rootfs.img"] = "rootfs.img"
    fs: Literal["ext4"] = "ext4"
    size: int = Field(gt=0)
    sha256: Sha256


class Manifest(_Release):
    """manifest.json. What an operator of many boxes needs to pick, trace and audit a bundle: which
    product and hardware it is for, its version and the oldest it is compatible with, the image's size
    and hash, when and from what it was built (``build``: e.g. ``git describe``), and free-form release
    notes or their URL. Which release key signed it is known from the verification, not claimed here."""

    created: AwareDatetime
    notes: str = Field(default="", max_length=2000)
    rootfs: Rootfs


class ReleaseInfo(_Release):
    """/usr/share/nsg/release.json in every root filesystem: what this slot runs. Written by the image
    builder (``python -m image.bundle release-info``) with the values its bundle's manifest gets."""


def parse_manifest(raw: bytes) -> Manifest:
    """Called only on bytes whose signature verified: a failure here is a release-tooling defect."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleRefused("bad-manifest", f"bundle manifest is not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("format"), int) and doc["format"] > FORMAT:
        raise BundleRefused("format-unsupported",
                            f"bundle manifest format {doc['format']} is newer than this box reads ({FORMAT})")
    try:
        return Manifest.model_validate(doc)
    except ValidationError as exc:
        raise BundleRefused("bad-manifest", f"bundle manifest is invalid: {_first_problem(exc)}") from None


def read_release(path: Path = RELEASE_FILE) -> ReleaseInfo:
    try:
        return ReleaseInfo.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BoxError("no-release-info", f"{path} is missing: this image does not say what it runs") from None
    except OSError as exc:
        raise BoxError("no-release-info", f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise BoxError("no-release-info", f"{path} is invalid: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(document)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {err['msg']}{more}"

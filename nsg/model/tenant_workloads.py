"""Tenant workloads in the gateway config: containers (apps) and VMs, attached to a subnet like any LAN host."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from nsg.model.base import Frozen

_APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}(:[A-Za-z0-9._-]{1,64})?$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")  # a host[:port], no user info
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def image_reference(v: str) -> str:
    """An image reference like 'acme/web:1.2' (lowercase repository, optional tag), or ValueError."""
    if not isinstance(v, str) or not _IMAGE.match(v):
        raise ValueError(f"image {v!r} is not a reference like 'acme/web:1.2'")
    return v


def source_url(v: str) -> str:
    """``file:///PATH`` or ``https://HOST[:PORT]/PATH``, or ValueError. The path (percent-decoded, as the
    gateway will read it: containers/image_fetch.py) is absolute and normalised: no '.', '..' or empty segments,
    so a source names the file it seems to and cannot climb out of a directory (RFC 8089, RFC 3986 5.2.4)."""
    if any(c.isspace() or not c.isprintable() for c in v):
        raise ValueError("image source URLs are printable, without spaces")
    parts = urlsplit(v)
    if v.startswith("file:///"):
        if parts.query or parts.fragment:
            raise ValueError("a file:/// image source has no query or fragment")
    elif v.startswith("https://") and _HOST.match(parts.netloc) and not parts.fragment:
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"image source {v!r}: bad port") from None
    else:
        raise ValueError("image source must be https://HOST[:PORT]/PATH or file:///PATH")
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"image source path {parts.path!r} is not UTF-8 once percent-decoded") from None
    if not path.startswith("/") or any(s in ("", ".", "..") for s in path.split("/")[1:]) \
            or not path.isprintable():
        raise ValueError(f"image source path {path!r} must be absolute and normalised (no '..', '.' or "
                         "empty segments, no control characters)")
    return v


class ImageSource(Frozen):
    """Where the image's `docker save` tarball comes from, and its SHA-256: nothing is loaded into the
    engine unless the bytes hash to it. `https://...` is the controller's device site (fetched with the
    gateway's LDevID, the server checked against the controller CA); `file:///...` a local file."""

    url: str = Field(max_length=4000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return source_url(v)


class App(Frozen):
    name: str
    image: str  # the reference it runs, e.g. "acme/web:1.2" (in the tarball, if image_source is given)
    image_source: ImageSource | None = None  # None: the engine has the image already
    subnet: str  # the tenant subnet it joins (by name)
    address: IPv4Address  # its fixed address in that subnet
    command: tuple[str, ...] = Field(default=(), max_length=64)
    # {"NAME": "value"} in a document; kept as sorted pairs (hashable, one order)
    env: tuple[tuple[str, str], ...] = Field(default=(), max_length=64)
    memory_mb: int | None = Field(default=None, ge=4, le=1 << 20)
    cpus: float | None = Field(default=None, gt=0, le=256)
    pids: int | None = Field(default=None, ge=8, le=1 << 22)
    restart: Literal["no", "always", "on-failure", "unless-stopped"] = "always"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _APP_NAME.match(v):
            raise ValueError("app names are 1-32 of lowercase letters, digits and '-', starting alphanumeric")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        return image_reference(v)

    @field_validator("env", mode="before")
    @classmethod
    def _env_pairs(cls, v: object) -> object:
        return tuple(sorted(v.items())) if isinstance(v, dict) else v

    @field_validator("env")
    @classmethod
    def _env(cls, v: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for k, val in v:
            if not _ENV_KEY.match(k) or len(val) > 4096 or "\x00" in val:
                raise ValueError(f"environment variable {k!r}: a name like FOO_BAR and a value under 4 KiB")
        return v


class Vm(Frozen):
    """A VM workload: qemu with a TAP device on the subnet's bridge. The guest learns its address from
    its kernel command line (``nsg.ip=ADDR/PREFIX nsg.gw=GW nsg.mtu=N``) and brings its own network up."""

    name: str
    subnet: str
    address: IPv4Address
    kernel: ImageSource  # the guest kernel (bzImage) and its SHA-256
    initrd: ImageSource | None = None
    append: str = Field(default="", max_length=1024)  # more kernel command line
    memory_mb: int = Field(default=256, ge=32, le=1 << 20)
    cpus: int = Field(default=1, ge=1, le=64)
    accel: Literal["auto", "kvm", "tcg"] = "auto"  # auto: kvm where /dev/kvm works, else tcg

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _APP_NAME.match(v):
            raise ValueError("VM names are 1-32 of lowercase letters, digits and '-', starting alphanumeric")
        return v

    @field_validator("append")
    @classmethod
    def _append(cls, v: str) -> str:
        if not v.isprintable() or "nsg." in v:
            raise ValueError("printable kernel parameters, none of them nsg.* (nsg sets those)")
        return v

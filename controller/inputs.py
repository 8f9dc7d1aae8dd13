"""Validation of everything that enters the controller's store, and the store's error types.

Each check names the input field at fault (a StoreError is the caller's fault)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.enterprise import UplinkDef
from nsg.model.config import IfName, Name

SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
ACTIVATION_MIN, ACTIVATION_MAX = 6, 128
# scrypt cost: 16 MiB and some 50 ms per guess (RFC 7914 section 2 names the parameters).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


class StoreError(Exception):
    """The store refused a request; ``field`` names the input at fault. The caller's fault."""

    kind = "invalid"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(StoreError):
    kind = "not_found"


class Conflict(StoreError):
    """The input clashes with what is stored: a duplicate, or a thing still in use."""

    kind = "conflict"


_NAME = TypeAdapter(Name)
_IFNAME = TypeAdapter(IfName)
_UPLINKS = TypeAdapter(tuple[UplinkDef, ...])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _loc(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-"):
            out += ("." if out else "") + part
    return out


def _validated(adapter: TypeAdapter[Any], value: object, field: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise StoreError(_loc(field, err["loc"]), err["msg"].removeprefix("Value error, ")) from None


def _name(value: object, field: str = "name") -> str:
    return _validated(_NAME, value, field)


def _network(value: object, field: str) -> IPv4Network:
    try:
        return IPv4Network(str(value))
    except (AddressValueError, NetmaskValueError, ValueError) as exc:
        raise StoreError(field, f"{value!r} is not an IPv4 network (address/prefix, no host bits): {exc}") from None


def _address(value: object, field: str) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except AddressValueError as exc:
        raise StoreError(field, f"{value!r} is not an IPv4 address: {exc}") from None


def hash_activation_code(code: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(code.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${dk.hex()}"


def verify_activation_code(stored: str, code: str) -> bool:
    algo, n, r, p, salt, want = stored.split("$")
    if algo != "scrypt":
        return False
    dk = hashlib.scrypt(code.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(want) // 2)
    return hmac.compare_digest(dk, bytes.fromhex(want))


@functools.cache
def _dummy_hash() -> str:
    return hash_activation_code(secrets.token_hex(8))


def _activation(code: object) -> str:
    if not isinstance(code, str) or not ACTIVATION_MIN <= len(code) <= ACTIVATION_MAX or not code.isprintable():
        raise StoreError("activation_code", f"must be {ACTIVATION_MIN}-{ACTIVATION_MAX} printable characters")
    return hash_activation_code(code)


def _serial(value: object) -> str:
    if not isinstance(value, str) or not SERIAL_RE.match(value):
        raise StoreError("serial", "serial numbers are 1-64 of letters, digits, '.', '_', ':', '/', '-'")
    return value


def _uplinks(value: object) -> tuple[UplinkDef, ...]:
    ups: tuple[UplinkDef, ...] = _validated(_UPLINKS, value, "uplinks")
    if not ups:
        raise StoreError("uplinks", "a gateway needs at least one uplink")
    for attr in ("name", "interface"):
        seen: set[str] = set()
        for i, u in enumerate(ups):
            if getattr(u, attr) in seen:
                raise StoreError(f"uplinks[{i}].{attr}", f"{getattr(u, attr)} is used twice")
            seen.add(getattr(u, attr))
    for i, u in enumerate(ups):
        if u.public is not None and (u.public.is_multicast or u.public.is_unspecified or u.public.is_loopback
                                     or u.public == IPv4Address("255.255.255.255")):
            raise StoreError(f"uplinks[{i}].public", f"{u.public} is not a unicast address")
    if not any(u.public or u.address for u in ups):
        raise StoreError("uplinks", "no uplink has an address or a public address where the other sites reach it")
    return ups


def _ports(value: object, ups: tuple[UplinkDef, ...]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise StoreError("ports", "must map subnet names to lists of LAN interfaces")
    wan = {u.interface for u in ups}
    seen: set[str] = set()
    out: dict[str, tuple[str, ...]] = {}
    for subnet, ifaces in value.items():
        field = f"ports.{subnet}"
        _name(subnet, field)
        if isinstance(ifaces, str) or not isinstance(ifaces, Sequence):
            raise StoreError(field, "must be a list of interface names")
        for i, iface in enumerate(ifaces):
            _validated(_IFNAME, iface, f"{field}[{i}]")
            if iface in wan or iface == "lo":
                raise StoreError(f"{field}[{i}]", f"{iface} is an uplink or loopback, not a LAN port")
            if iface in seen:
                raise StoreError(f"{field}[{i}]", f"{iface} is a port of two subnets (or twice of one)")
            seen.add(iface)
        out[subnet] = tuple(ifaces)
    return out


def _pool(value: object) -> IPv4Network:
    pool = _network(value, "system_pool")
    if not 8 <= pool.prefixlen <= 29 or pool.is_multicast or pool.is_loopback or pool.is_reserved:
        raise StoreError("system_pool", f"{pool} is not a unicast pool of /8 to /29")
    return pool

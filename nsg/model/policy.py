"""Firewall policy in the gateway config: tenants (sets of subnets), their ordered ACLs, policy groups,
and local internet breakout. References between them (a group, a subnet, an app) are checked by
GatewayConfig, which knows the names; this module checks each piece on its own."""

from __future__ import annotations

import re
from ipaddress import IPv4Network
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nsg.model.base import Frozen

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_REF_KINDS = ("group", "subnet", "app", "vm")
MEMBER_KINDS = ("subnet", "app", "vm")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
MAX_ACL = 10_000


def _check_name(v: str, what: str) -> str:
    if not _NAME.match(v):
        raise ValueError(f"{what} names are 1-32 of lowercase letters, digits, '_', '-', starting alphanumeric")
    return v


def parse_ref(text: str) -> tuple[str, str]:
    """An endpoint reference: "any", "KIND:NAME" (group, subnet, app, vm) or an IPv4 prefix ("cidr", text)."""
    if text == "any":
        return "any", ""
    kind, sep, name = text.partition(":")
    if sep:
        if kind not in _REF_KINDS:
            raise ValueError(f"{text!r}: the kind is one of {', '.join(_REF_KINDS)} (or write a prefix or 'any')")
        if kind == "group":
            _check_name(name, kind)
        if not name:
            raise ValueError(f"{text!r}: a name after {kind}:")
        return kind, name
    try:
        return "cidr", str(IPv4Network(text))
    except ValueError:
        raise ValueError(f"{text!r} is not 'any', KIND:NAME or an IPv4 prefix without host bits") from None


class PortRange(Frozen):
    """One port or an inclusive range: 443, "443" or "8000-8080" in a document."""

    first: int = Field(ge=1, le=65535)
    last: int = Field(ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("a port is a number")
        if isinstance(v, int):
            return {"first": v, "last": v}
        if isinstance(v, str):
            a, sep, b = v.partition("-")
            try:
                return {"first": int(a), "last": int(b) if sep else int(a)}
            except ValueError:
                raise ValueError(f"{v!r} is not a port or a FIRST-LAST range") from None
        return v

    @model_validator(mode="after")
    def _order(self) -> PortRange:
        if self.last < self.first:
            raise ValueError(f"range {self.first}-{self.last} runs backwards")
        return self


class AclEntry(Frozen):
    name: str  # names its counters; unique within the tenant
    src: str = "any"
    dst: str = "any"
    protocol: Literal["any", "tcp", "udp", "icmp"] | int = "any"
    src_ports: tuple[PortRange, ...] = Field(default=(), max_length=64)
    dst_ports: tuple[PortRange, ...] = Field(default=(), max_length=64)
    dscp: int | None = Field(default=None, ge=0, le=63)
    action: Literal["allow", "drop", "reject"]
    stateful: bool = True  # an allowed flow's return traffic is allowed too (conntrack)
    log: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "ACL entry")

    @field_validator("src", "dst")
    @classmethod
    def _ref(cls, v: str) -> str:
        parse_ref(v)
        return v

    @field_validator("protocol")
    @classmethod
    def _proto(cls, v: str | int) -> str | int:
        if isinstance(v, int) and not 0 <= v <= 255:
            raise ValueError("an IP protocol number is 0-255")
        return v

    @model_validator(mode="after")
    def _ports_need_l4(self) -> AclEntry:
        if (self.src_ports or self.dst_ports) and self.protocol not in ("tcp", "udp"):
            raise ValueError("ports need protocol tcp or udp")
        return self


class PolicyGroup(Frozen):
    """A named set of endpoints: "subnet:NAME", "app:NAME", "vm:NAME" or IPv4 prefixes."""

    name: str
    members: tuple[str, ...] = Field(min_length=1, max_length=4096)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "group")

    @field_validator("members")
    @classmethod
    def _members(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            kind, _ = parse_ref(m)
            if kind not in (*MEMBER_KINDS, "cidr"):
                raise ValueError(f"member {m!r}: members are subnet:, app:, vm: or prefixes")
        return v


class Tenant(Frozen):
    """Subnets that may talk to each other as the ACL says; traffic between tenants is dropped."""

    name: str
    subnets: tuple[str, ...] = Field(min_length=1)
    acl: tuple[AclEntry, ...] = Field(default=(), max_length=MAX_ACL)
    default: Literal["allow", "drop"] = "drop"  # what the ACL does with what no entry matched

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "tenant")

    @model_validator(mode="after")
    def _unique(self) -> Tenant:
        seen: set[str] = set()
        for i, e in enumerate(self.acl):
            if e.name in seen:
                raise ValueError(f"acl[{i}].name {e.name!r} is used twice")
            seen.add(e.name)
        return self


class Breakout(Frozen):
    """Local internet breakout: the subnet reaches the internet through this uplink, source-NATed."""

    subnet: str
    uplink: str


class PolicyConfig(Frozen):
    tenants: tuple[Tenant, ...] = Field(default=(), max_length=64)
    groups: tuple[PolicyGroup, ...] = Field(default=(), max_length=256)
    breakout: tuple[Breakout, ...] = Field(default=(), max_length=256)

    @model_validator(mode="after")
    def _unique(self) -> PolicyConfig:
        for what, names in (("tenants", [t.name for t in self.tenants]), ("groups", [g.name for g in self.groups]),
                            ("breakout", [b.subnet for b in self.breakout])):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{what}: {sorted(dup)[0]!r} appears twice")
        return self

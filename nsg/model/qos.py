"""QoS in the gateway config: forwarding classes A-H chosen by DSCP, each with a guaranteed share, a
ceiling and a priority, shaped on each WAN uplink's egress (and ingress) at the uplink's rate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from nsg.model.base import Frozen

ClassName = Literal["A", "B", "C", "D", "E", "F", "G", "H"]
CLASS_NAMES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G", "H")
MAX_KBIT = 100_000_000  # 100 Gbit/s


class ForwardingClass(Frozen):
    name: ClassName
    guaranteed_pct: float = Field(gt=0, le=100)  # of the uplink's rate, under contention
    ceiling_pct: float = Field(default=100, gt=0, le=100)  # what it may borrow up to
    priority: int = Field(default=4, ge=0, le=7)  # 0 first: spare bandwidth, and the shortest queue wait

    @model_validator(mode="after")
    def _ceiling(self) -> ForwardingClass:
        if self.ceiling_pct < self.guaranteed_pct:
            raise ValueError(f"class {self.name}: ceiling_pct {self.ceiling_pct} is below guaranteed_pct "
                             f"{self.guaranteed_pct}")
        return self


class UplinkShaping(Frozen):
    uplink: str  # an uplink's name
    egress_kbit: int = Field(ge=8, le=MAX_KBIT)  # what the line carries upstream: shaped just below it
    ingress_kbit: int | None = Field(default=None, ge=8, le=MAX_KBIT)  # downstream, shaped through an ifb


class Limiter(Frozen):
    """A policer for one endpoint: traffic above ``rate_kbit`` is dropped (token bucket, ``burst_kbyte``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    target: str  # "subnet:NAME", "app:NAME", "vm:NAME" or an IPv4 prefix
    rate_kbit: int = Field(ge=8, le=MAX_KBIT)
    burst_kbyte: int = Field(default=64, ge=1, le=1 << 20)
    direction: Literal["both", "from", "to"] = "both"  # from: what the target sends; to: what it receives

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        from nsg.model.policy import parse_ref

        kind, _ = parse_ref(v)
        if kind not in ("subnet", "app", "vm", "cidr"):
            raise ValueError("a limiter's target is subnet:, app:, vm: or a prefix")
        return v


class QosConfig(Frozen):
    classes: tuple[ForwardingClass, ...] = Field(min_length=1, max_length=8)
    dscp: dict[int, ClassName] = Field(default_factory=dict)  # DSCP value -> class; the rest: default_class
    default_class: ClassName
    uplinks: tuple[UplinkShaping, ...] = Field(default=(), max_length=16)
    limiters: tuple[Limiter, ...] = Field(default=(), max_length=1024)

    @field_validator("dscp")
    @classmethod
    def _dscp(cls, v: dict[int, str]) -> dict[int, str]:
        for d in v:
            if not 0 <= d <= 63:
                raise ValueError(f"DSCP {d} is not 0-63")
        return v

    @model_validator(mode="after")
    def _check(self) -> QosConfig:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("classes: a class is defined twice")
        for d, c in self.dscp.items():
            if c not in names:
                raise ValueError(f"dscp {d}: class {c} is not defined in classes")
        if self.default_class not in names:
            raise ValueError(f"default_class: class {self.default_class} is not defined in classes")
        total = sum(c.guaranteed_pct for c in self.classes)
        if total > 100:
            raise ValueError(f"classes: the guaranteed shares add up to {total:g}%, more than the uplink")
        ups = [u.uplink for u in self.uplinks]
        if len(set(ups)) != len(ups):
            raise ValueError("uplinks: an uplink is shaped twice")
        lim = [x.name for x in self.limiters]
        if len(set(lim)) != len(lim):
            raise ValueError("limiters: a name is used twice")
        return self

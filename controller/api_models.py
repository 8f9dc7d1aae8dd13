"""The admin API's wire models (pydantic: requests refuse unknown fields and are strict: no coercion, so
``true`` is not 1 and ``"100"`` is not 100; addresses and prefixes are strings in JSON) and the conversions
from the store's records to them. controller/api.py serves them; its OpenAPI document is built from them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from controller.enterprise import EnterpriseIpsec, UplinkDef
from controller.inputs import ACTIVATION_MAX, ACTIVATION_MIN, SERIAL_RE
from controller.safe_text import safe
from controller.security_events import KEEP, SecurityEvent
from controller.store_enterprises import EnterpriseRec, SubnetRec
from controller.store_gateways import GatewayRec
from controller.store_workloads import AppRec, ImageRec, VmRec
from nsg.model.config import IfName, Name, PortSecurity
from nsg.model.policy import PolicyConfig
from nsg.model.qos import QosConfig
from nsg.model.tenant_workloads import source_url
from nsg.model.upgrade import UpgradeState

log = logging.getLogger("controller.api")

Serial = Annotated[str, StringConstraints(pattern=SERIAL_RE.pattern)]
ActivationCode = Annotated[str, Field(min_length=ACTIVATION_MIN, max_length=ACTIVATION_MAX,
                                      json_schema_extra={"writeOnly": True, "format": "password"})]


# -- wire models ---------------------------------------------------------------------------------


class _In(BaseModel):
    # strict: a request says what it means (controller/api_http.py also validates the nested nsg.model parts
    # strictly, with model_validate_json(..., strict=True): JSON strings stay valid for addresses)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class IpsecSettings(EnterpriseIpsec):
    """IPsec settings of an enterprise: proposals and timers, and ``auth`` "ldevid" (the default: every
    gateway its own certificate, no secret anywhere) or "psk" with ``psk``, the secret each pair of
    gateways' key is derived from (no gateway receives it)."""


class EnterpriseIn(_In):
    name: Name
    transport: Literal["plain", "esp"] = "plain"
    ipsec: IpsecSettings | None = None


class EnterpriseOut(_Out):
    name: str
    transport: Literal["plain", "esp"]
    ipsec: dict[str, Any] | None = Field(description="IPsec settings; the PSK secret itself is left out")
    psk_set: bool
    generation: int
    created: str


class EnterpriseList(_Out):
    enterprises: list[EnterpriseOut]


class SubnetIn(_In):
    name: Name
    vni: int
    cidr: IPv4Network
    gateway: IPv4Address
    port_security: PortSecurity | None = PortSecurity()  # every LAN port's MAC limits; null: off


class PortSecurityIn(_In):
    """A subnet's LAN port security, at every site: null turns it off."""

    port_security: PortSecurity | None


class SubnetOut(_Out):
    enterprise: str
    name: str
    vni: int
    cidr: IPv4Network
    gateway: IPv4Address
    port_security: PortSecurity | None


class SubnetList(_Out):
    subnets: list[SubnetOut]


class GatewayIn(_In):
    name: Name
    serial: Serial
    uplinks: list[UplinkDef] = Field(min_length=1)
    ports: dict[Name, list[IfName]] = Field(default_factory=dict, description="subnet name -> LAN interfaces")
    behind_nat: bool = False
    activation_code: ActivationCode | None = Field(default=None, repr=False)
    role: Literal["edge", "hub"] = Field(default="edge", description="hub: the overlay end beside the route "
                                         "reflector (no LAN ports)")


class GatewayPatch(_In):
    """Only the fields given change; ``activation_code: null`` removes the code."""

    serial: Serial | None = None
    uplinks: list[UplinkDef] | None = Field(default=None, min_length=1)
    ports: dict[Name, list[IfName]] | None = None
    behind_nat: bool | None = None
    activation_code: ActivationCode | None = Field(default=None, repr=False)


class GatewayOut(_Out):
    enterprise: str
    name: str
    serial: str
    system_ip: IPv4Address
    uplinks: list[UplinkDef]
    ports: dict[str, list[str]]
    behind_nat: bool
    activation_code_set: bool
    created: str
    role: str


class GatewayList(_Out):
    gateways: list[GatewayOut]


class IdentityReset(_Out):
    name: str
    serial: str
    revoked: list[str] = Field(description="serial numbers (hex) of the LDevIDs revoked; the box may now enroll "
                                           "once with its IDevID")


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Restart = Literal["no", "always", "on-failure", "unless-stopped"]


class ImageOut(_Out):
    enterprise: str
    sha256: str
    size: int
    references: list[str] = Field(description="the image references (NAME:TAG) the tarball carries")
    created: str


class ImageList(_Out):
    images: list[ImageOut]


class AppIn(_In):
    name: str
    subnet: str
    image: str = Field(description="the reference it runs; an uploaded tarball must carry it")
    image_sha256: Sha256 | None = Field(default=None, description="which upload; default: the newest carrying image")
    address: IPv4Address | None = Field(default=None, description="default: the controller's IPAM picks one")
    command: list[str] = []
    env: dict[str, str] = {}
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    restart: Restart = "always"


class AppPatch(_In):
    """Only the fields given change (a new image, limits, environment...); name, subnet and address stay."""

    image: str | None = None
    image_sha256: Sha256 | None = None
    command: list[str] | None = None
    env: dict[str, str] | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    restart: Restart | None = None


class AppLive(_Out):
    """What the gateway last reported about the app (telemetry over the channel)."""

    state: str | None = Field(description="running, restarting, exited, absent...")
    attached: bool | None = None
    address: str | None = Field(default=None, description="as attached on the gateway (address/prefix)")
    restarts: int | None = None
    oom_killed: bool | None = None
    memory_mb: float | None = None
    cpu_percent: float | None = None
    error: str | None = None


class AppOut(_Out):
    gateway: str
    name: str
    subnet: str
    address: IPv4Address
    image: str
    image_sha256: str | None
    command: list[str]
    env: dict[str, str]
    memory_mb: int | None
    cpus: float | None
    pids: int | None
    restart: str
    created: str
    live: AppLive | None = Field(description="null while the gateway has not reported it")


class AppList(_Out):
    apps: list[AppOut]


class ImageSourceIn(_In):
    url: str = Field(max_length=4000, description="file:///PATH on the gateway: absolute, no '..' or '.'")
    sha256: Sha256

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return source_url(v)


class VmIn(_In):
    name: str
    subnet: str
    address: IPv4Address | None = Field(default=None, description="default: the controller's IPAM picks one")
    kernel: ImageSourceIn
    initrd: ImageSourceIn | None = None
    append: str = ""
    memory_mb: int = 256
    cpus: int = 1
    accel: Literal["auto", "kvm", "tcg"] = "auto"


class VmLive(_Out):
    state: str | None = Field(description="running, stopped, absent...")
    attached: bool | None = None
    address: str | None = None
    restarts: int | None = None
    error: str | None = None


class VmOut(_Out):
    gateway: str
    name: str
    subnet: str
    address: IPv4Address
    kernel: dict[str, str]
    initrd: dict[str, str] | None
    append: str
    memory_mb: int
    cpus: int
    accel: str
    created: str
    live: VmLive | None = Field(description="null while the gateway has not reported it")


class VmList(_Out):
    vms: list[VmOut]


class PolicyOut(_Out):
    enterprise: str
    generation: int
    policy: PolicyConfig | None = Field(description="null: no firewall (nothing filtered, no breakout)")


class QosOut(_Out):
    enterprise: str
    generation: int
    qos: QosConfig | None = Field(description="null: no shaping; gateways shape the uplinks that carry egress_kbit")


class RuleCount(_Out):
    packets: int
    bytes: int


class PolicyCountersOut(_Out):
    gateway: str
    connected: bool
    generation: int | None = Field(default=None, description="the config generation whose policy they count")
    ts: float | None = Field(default=None, description="when the gateway read them (Unix time)")
    counters: dict[str, RuleCount] = Field(default_factory=dict, description=(
        "acl.<tenant>.<entry>, default.<tenant>, wall.<tenant> (dropped between tenants or toward an uplink "
        "without breakout), breakout.<subnet>"))


Reason = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
MAX_SECURITY_EVENTS_IN = 256


class SecurityEventIn(_In):
    """One event about one gateway, named by ``gateway`` or by its ``system_ip`` (what a BGP peer is known by)."""

    gateway: Name | None = None
    system_ip: IPv4Address | None = None
    reason: Reason = Field(description="what happened, e.g. foreign-rd, mac-flapping, duplicate-mac")
    count: int = Field(default=1, ge=1, le=2**31 - 1, description="how many times since the last event of this "
                                                                  "gateway and reason")
    message: str = Field(default="", max_length=512, description="for people: an example, the route, ...")
    ts: float | None = Field(default=None, ge=0, le=2**63 - 1, allow_inf_nan=False,
                             description="when (Unix time); default: when the controller heard of it")

    @model_validator(mode="after")
    def _named(self) -> SecurityEventIn:
        if self.gateway is None and self.system_ip is None:
            raise ValueError("name the gateway: give gateway or system_ip")
        return self


class SecurityEventsIn(_In):
    source: Literal["route-reflector"] = Field(default="route-reflector", description="who saw them")
    events: list[SecurityEventIn] = Field(min_length=1, max_length=MAX_SECURITY_EVENTS_IN)


class SecurityEventsAccepted(_Out):
    accepted: int


class SecurityEventOut(_Out):
    gateway: str = Field(description="its name (its serial if the controller no longer knows it)")
    ts: float
    source: Literal["gateway", "route-reflector"]
    reason: str
    count: int
    message: str


class SecuritySection(_Out):
    counters: dict[str, int] = Field(default_factory=dict, description="events per reason, counted since the "
                                     "controller started (at most 64 reasons, then 'other')")
    events: list[SecurityEventOut] = Field(default_factory=list, description=f"the last {KEEP}, oldest first")


class SecurityEventList(_Out):
    counters: dict[str, dict[str, int]] = Field(description="gateway -> reason -> count")
    events: list[SecurityEventOut] = Field(description="the events kept (per gateway the last ones), oldest first")


def _security_out(gateway: str, event: SecurityEvent) -> SecurityEventOut:
    return SecurityEventOut(gateway=gateway, ts=event.ts, source=event.source,  # type: ignore[arg-type]
                            reason=event.reason, count=event.count, message=event.message)


class GatewayStatus(_Out):
    name: str
    connected: bool = Field(description="its management channel is up now")
    generation: int = Field(description="the config generation the controller has for it")
    sent_generation: int | None = None
    applied_generation: int | None = Field(default=None, description="the last generation it reported applied")
    last_apply_error: str | None = None
    waiting: list[str] = Field(default=[], description="what its config names that the box lacks (degraded)")
    rolled_back_generation: int | None = Field(
        default=None, description="a generation it applied, could not be confirmed with, and undid (commit-confirm)")
    rollback_reason: str | None = None
    interfaces: list[str] = Field(default=[], description="the network interfaces the gateway reports having")
    telemetry_at: float | None = Field(default=None, description="when its last telemetry was sent (Unix time)")
    counters: dict[str, int | float | str | None] = {}
    apps: dict[str, AppLive] = {}
    vms: dict[str, VmLive] = {}
    security: SecuritySection = Field(default_factory=SecuritySection, description=(
        "security events about it: from the gateway itself and from the route reflector"))
    upgrade_target: str | None = Field(default=None, description="the release its upgrade profile names")
    upgrade: UpgradeState | None = Field(default=None, description=(
        "its A/B slots, versions, last upgrade attempt and what it does about the target, as it last reported"))
    upgrade_at: float | None = Field(default=None, description="when it reported that (Unix time)")


class ErrorBody(_Out):
    code: str
    message: str
    field: str | None = None


class Error(_Out):
    error: ErrorBody


def _enterprise_out(e: EnterpriseRec) -> EnterpriseOut:
    ipsec = None if e.ipsec is None else e.ipsec.model_dump(mode="json", exclude_none=True, exclude={"psk"})
    return EnterpriseOut(name=e.name, transport=e.transport, ipsec=ipsec,
                         psk_set=bool(e.ipsec and e.ipsec.psk), generation=e.generation, created=e.created)


def _subnet_out(s: SubnetRec) -> SubnetOut:
    return SubnetOut(enterprise=s.enterprise, name=s.name, vni=s.vni, cidr=s.cidr, gateway=s.gateway,
                     port_security=s.port_security)


def _gateway_out(g: GatewayRec) -> GatewayOut:
    return GatewayOut(enterprise=g.enterprise, name=g.name, serial=g.serial, system_ip=g.system_ip,
                      uplinks=list(g.uplinks), ports={k: list(v) for k, v in g.ports.items()},
                      behind_nat=g.behind_nat, activation_code_set=g.has_activation_code, created=g.created,
                      role=g.role)


def _app_out(rec: AppRec, live: dict[str, AppLive]) -> AppOut:
    a = rec.app
    return AppOut(gateway=rec.gateway, name=a.name, subnet=a.subnet, address=a.address, image=a.image,
                  image_sha256=a.image_sha256, command=list(a.command), env=dict(a.env), memory_mb=a.memory_mb,
                  cpus=a.cpus, pids=a.pids, restart=a.restart, created=rec.created, live=live.get(a.name))


def _image_out(i: ImageRec) -> ImageOut:
    return ImageOut(enterprise=i.enterprise, sha256=i.sha256, size=i.size, references=list(i.references),
                    created=i.created)


def _live_of(counters: Mapping[str, Any], prefix: str, model: type[BaseModel]) -> dict[str, Any]:
    """Telemetry keys <prefix>.<name>.<what> -> one ``model`` per app or VM."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in counters.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == prefix and parts[2] in model.model_fields:
            found.setdefault(parts[1], {})[parts[2]] = value
    out = {}
    for name, fields in found.items():
        try:
            out[name] = model.model_validate({"state": None, **fields})
        except ValidationError:
            log.warning("gateway reported unusable %s telemetry for %s: %s", prefix, safe(name, 80),
                        safe(fields, 300))
    return out


def _vm_out(rec: VmRec, live: dict[str, VmLive]) -> VmOut:
    v = rec.vm
    return VmOut(gateway=rec.gateway, name=v.name, subnet=v.subnet, address=v.address,
                 kernel=v.kernel.model_dump(), initrd=v.initrd.model_dump() if v.initrd else None, append=v.append,
                 memory_mb=v.memory_mb, cpus=v.cpus, accel=v.accel, created=rec.created, live=live.get(v.name))

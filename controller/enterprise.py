"""An enterprise as the controller knows it: subnets and gateways, each gateway's uplinks and LAN ports."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nsg.model import Subnet, Uplink
from nsg.model.config import PortSecurity
from nsg.model.ipsec import IpsecTuning
from nsg.model.policy import PolicyConfig, parse_ref
from nsg.model.qos import MAX_KBIT, QosConfig
from nsg.model.tenant_workloads import App, ImageSource, Vm
from nsg.model.upgrade import Model
from nsg.upgrade.manifest import SemVer

EVPN_ASN = 65000  # a private AS (RFC 6996): iBGP inside one enterprise


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnterpriseIpsec(IpsecTuning):
    """The enterprise's IPsec settings. ``auth`` "ldevid" (the default): every gateway authenticates with
    its own LDevID and the controller holds no data-plane secret at all. "psk" (an explicit choice):
    ``psk`` is a secret of the controller's from which each *pair* of gateways gets its own key
    (controller.mesh.pair_psk); no gateway ever receives it, nor a key of a pair it is not part of."""

    auth: Literal["ldevid", "psk"] = "ldevid"
    psk: str | None = Field(default=None, min_length=16, max_length=256, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _psk_means_psk(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("psk") and "auth" not in data:
            return {**data, "auth": "psk"}  # settings stored before "auth" existed
        return data

    @model_validator(mode="after")
    def _secret(self) -> EnterpriseIpsec:
        if (self.auth == "psk") != (self.psk is not None):
            raise ValueError("auth 'psk' needs 'psk' (the secret pair keys derive from); 'ldevid' takes none")
        return self


class SubnetDef(_M):
    name: str
    vni: int
    cidr: str
    gateway: str
    port_security: PortSecurity | None = PortSecurity()  # every LAN port's limits at every site; None: off


class UplinkDef(Uplink):
    # Where the other sites reach this uplink: the NAT's outside address when the
    # gateway sits behind NAT; otherwise the uplink's own address.
    public: IPv4Address | None = None
    # The line's rates: with an enterprise QoS profile, the gateway shapes this uplink to them.
    egress_kbit: int | None = Field(default=None, ge=8, le=MAX_KBIT)
    ingress_kbit: int | None = Field(default=None, ge=8, le=MAX_KBIT)

    @model_validator(mode="after")
    def _rates(self) -> UplinkDef:
        if self.ingress_kbit is not None and self.egress_kbit is None:
            raise ValueError("ingress_kbit needs egress_kbit (shaping starts with the upstream)")
        return self


Role = Literal["edge", "hub"]


class BundleDef(_M):
    """A signed upgrade bundle the enterprise uploaded (its manifest's fields, as the controller verified
    them with its release keys); gateways fetch it from the device site by its SHA-256."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    model: Model
    version: SemVer
    min_version: SemVer


class UpgradeProfile(_M):
    """The release an enterprise's gateways (or one gateway, overriding it) should run. ``retry``: how many
    times the operator asked for one more try of a version that failed on a box."""

    version: SemVer
    commit_after_s: float | None = Field(default=None, ge=5, le=86400)  # None: the gateway's default (300 s)
    retry: int = Field(default=0, ge=0, le=2**31 - 1)


class AppDef(App):
    """A tenant app on one gateway, as the controller keeps it: the image by its uploaded tarball's
    SHA-256 (the controller serves it to the gateway); the address always set (IPAM filled it in)."""

    image_source: None = None  # derived at render time from image_sha256 and the controller's URL
    image_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class VmDef(Vm):
    """A tenant VM on one gateway. Its kernel and initrd are files on the gateway (file:///, with
    their SHA-256): the controller does not carry VM images."""

    @field_validator("kernel", "initrd")
    @classmethod
    def _local(cls, v: ImageSource | None) -> ImageSource | None:
        if v is not None and not v.url.startswith("file:///"):
            raise ValueError("VM kernels and initrds are files on the gateway: file:///PATH")
        return v


class GatewayDef(_M):
    name: str
    system_ip: IPv4Address
    serial: str | None = None  # the device serial its LDevID carries (IKE peers are bound to it)
    uplinks: tuple[UplinkDef, ...] = Field(min_length=1)
    ports: dict[str, tuple[str, ...]] = {}  # subnet name -> LAN interfaces
    behind_nat: bool = False  # its uplinks are NATed: it starts IKE toward every peer
    # "hub": the overlay end of the controller's site. It carries no subnets; the route reflector
    # beside it listens on its system IP, so every edge's BGP session runs inside its tunnel to the hub.
    role: Role = "edge"
    apps: tuple[AppDef, ...] = ()
    vms: tuple[VmDef, ...] = ()
    upgrade: UpgradeProfile | None = None  # overrides the enterprise's

    def endpoint(self) -> IPv4Address | None:
        for u in self.uplinks:
            if u.public:
                return u.public
            if u.address:
                return u.address.ip
        return None


class Enterprise(_M):
    name: str
    generation: int = Field(default=1, ge=0)
    transport: Literal["plain", "esp"] = "plain"
    ipsec: EnterpriseIpsec | None = None
    crl: str | None = None  # the controller CA's revocation list (PEM), pushed to gateways with auth "ldevid"
    subnets: tuple[SubnetDef, ...] = ()
    gateways: tuple[GatewayDef, ...] = ()
    evpn_asn: int = Field(default=EVPN_ASN, ge=1, le=(1 << 32) - 1)  # iBGP: the RR and every gateway
    # The firewall: tenants, ACLs, groups, breakout; every edge gateway gets it (app:/vm: references
    # resolved to the workload's address, breakout only where the gateway has that uplink).
    policy: PolicyConfig | None = None
    # QoS: forwarding classes, the DSCP map and limiters; each gateway shapes the uplinks that carry
    # rates (UplinkDef.egress_kbit/ingress_kbit). The profile's own "uplinks" stays empty.
    qos: QosConfig | None = None
    # Where gateways fetch app image tarballs: the controller's device site (https://ADDR:PORT).
    image_base: str | None = Field(default=None, pattern=r"^https://[^/\s]{1,300}$")
    bundles: tuple[BundleDef, ...] = ()  # uploaded upgrade bundles (served from image_base too)
    upgrade: UpgradeProfile | None = None  # the release every gateway without its own profile should run

    @model_validator(mode="after")
    def _check(self) -> Enterprise:
        names = {s.name for s in self.subnets}
        for g in self.gateways:
            for s in g.ports:
                if s not in names:
                    raise ValueError(f"gateway {g.name}: ports name unknown subnet {s!r}")
            if g.endpoint() is None:
                raise ValueError(f"gateway {g.name}: no uplink has an address or a public address for peers")
        if len({g.name for g in self.gateways}) != len(self.gateways):
            raise ValueError("gateway names must be unique")
        if len({g.system_ip for g in self.gateways}) != len(self.gateways):
            raise ValueError("gateway system IPs must be unique")
        for g in self.gateways:
            if g.role == "hub" and (g.ports or g.apps or g.vms):
                raise ValueError(f"gateway {g.name}: a hub has no LAN ports, apps or VMs")
        # A subnet is one L2 segment across all sites: an app address is unique enterprise-wide.
        held: dict[tuple[str, IPv4Address], str] = {}
        for g in self.gateways:
            for a in (*g.apps, *g.vms):
                where = f"gateway {g.name}: {'app' if isinstance(a, AppDef) else 'VM'} {a.name}"
                if a.subnet not in names:
                    raise ValueError(f"{where}: unknown subnet {a.subnet!r}")
                if (a.subnet, a.address) in held:
                    raise ValueError(f"{where}: address {a.address} is also {held[(a.subnet, a.address)]}'s")
                held[(a.subnet, a.address)] = f"{g.name}/{a.name}"
                if isinstance(a, AppDef) and a.image_sha256 and self.image_base is None:
                    raise ValueError(f"{where}: the controller serves no devices, so no image URL to give")
        for g in self.gateways:
            profile = g.upgrade or self.upgrade
            if profile is None:
                continue
            if self.image_base is None:
                raise ValueError(f"gateway {g.name}: upgrade: the controller serves no devices, so no bundle URL")
            if not any(b.version == profile.version for b in self.bundles):
                raise ValueError(f"gateway {g.name}: upgrade: no uploaded bundle of version {profile.version}")
        if self.qos is not None and self.qos.uplinks:
            raise ValueError("qos: uplinks are shaped per gateway (the uplinks' egress_kbit), not in the profile")
        if self.policy is not None or self.qos is not None:
            self.workload_address_refs()  # raises on an unknown or ambiguous app:/vm: reference
        return self

    def workload_address_refs(self) -> dict[str, str]:
        """Every app:/vm: reference of the policy -> the workload's address as a /32 prefix. App and VM
        names are unique per gateway only: a name on two gateways cannot be referred to this way."""
        refs: dict[str, str] = {}  # reference -> the document it is in
        if self.qos is not None:
            refs |= {lim.target: "qos" for lim in self.qos.limiters}
        if self.policy is not None:
            refs |= {m: "policy" for g in self.policy.groups for m in g.members}
            refs |= {r: "policy" for t in self.policy.tenants for e in t.acl for r in (e.src, e.dst)}
        out = {}
        for ref, where in sorted(refs.items()):
            kind, name = parse_ref(ref)
            if kind not in ("app", "vm"):
                continue
            found = [(g.name, w.address) for g in self.gateways for w in (g.apps if kind == "app" else g.vms)
                     if w.name == name]
            if not found:
                raise ValueError(f"{where}: {ref!r}: no {kind} of that name on any gateway")
            if len(found) > 1:
                raise ValueError(f"{where}: {ref!r}: the name is on {', '.join(g for g, _ in found)}; "
                                 "use an address")
            out[ref] = f"{found[0][1]}/32"
        return out


__all__ = ["AppDef", "BundleDef", "Enterprise", "GatewayDef", "Subnet", "SubnetDef", "UpgradeProfile", "UplinkDef",
           "VmDef"]

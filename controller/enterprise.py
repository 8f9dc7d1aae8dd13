"""An enterprise as the controller knows it: subnets and gateways, each gateway's uplinks and LAN ports."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nsg.model import Subnet, Uplink
from nsg.model.ipsec import IpsecConfig

EVPN_ASN = 65000  # a private AS (RFC 6996): iBGP inside one enterprise


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubnetDef(_M):
    name: str
    vni: int
    cidr: str
    gateway: str


class UplinkDef(Uplink):
    # Where the other sites reach this uplink: the NAT's outside address when the
    # gateway sits behind NAT; otherwise the uplink's own address.
    public: IPv4Address | None = None


Role = Literal["edge", "hub"]


class GatewayDef(_M):
    name: str
    system_ip: IPv4Address
    uplinks: tuple[UplinkDef, ...] = Field(min_length=1)
    ports: dict[str, tuple[str, ...]] = {}  # subnet name -> LAN interfaces
    behind_nat: bool = False  # its uplinks are NATed: it starts IKE toward every peer
    # "hub": the overlay end of the controller's site. It carries no subnets; the route reflector
    # beside it listens on its system IP, so every edge's BGP session runs inside its tunnel to the hub.
    role: Role = "edge"

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
    ipsec: IpsecConfig | None = None
    subnets: tuple[SubnetDef, ...] = ()
    gateways: tuple[GatewayDef, ...] = ()
    evpn_asn: int = Field(default=EVPN_ASN, ge=1, le=(1 << 32) - 1)  # iBGP: the RR and every gateway

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
            if g.role == "hub" and g.ports:
                raise ValueError(f"gateway {g.name}: a hub has no LAN ports")
        return self


__all__ = ["Enterprise", "GatewayDef", "Subnet", "SubnetDef", "UplinkDef"]

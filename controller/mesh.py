"""Derive each gateway's configuration from the enterprise: full mesh of peers. Pure."""

from __future__ import annotations

from controller.enterprise import Enterprise, GatewayDef
from nsg.model import SCHEMA_VERSION, GatewayConfig, parse_config


def _initiate(me: GatewayDef, peer: GatewayDef) -> str:
    """Only the side behind a NAT can open the way; between equals the lower system IP does."""
    if peer.behind_nat and not me.behind_nat:
        return "never"
    if me.behind_nat and not peer.behind_nat:
        return "always"
    return "auto"


def render(ent: Enterprise) -> dict[str, GatewayConfig]:
    """One validated GatewayConfig per gateway; raises ConfigError naming the gateway's field."""
    out = {}
    for g in ent.gateways:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "generation": ent.generation,
            "system_ip": str(g.system_ip),
            "uplinks": [u.model_dump(mode="json", exclude={"public"}, exclude_none=True) for u in g.uplinks],
            "subnets": [
                {**s.model_dump(mode="json"), "ports": list(g.ports.get(s.name, ()))} for s in ent.subnets
            ],
            "peers": [
                {"name": p.name, "system_ip": str(p.system_ip), "endpoint": str(p.endpoint()),
                 "initiate": _initiate(g, p)}
                for p in ent.gateways
                if p.name != g.name
            ],
            "transport": ent.transport,
            "behind_nat": g.behind_nat,
        }
        if ent.ipsec is not None:
            doc["ipsec"] = ent.ipsec.model_dump(mode="json", exclude_none=True)
        out[g.name] = parse_config(doc, source=f"gateway {g.name}")
    return out

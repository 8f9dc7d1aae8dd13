"""Derive each gateway's configuration from the enterprise. Pure.

Data plane: a full mesh of peers (every gateway has an IKE/VXLAN peering with every other).
Control plane: with a hub in the enterprise, every edge gateway runs BGP EVPN toward the route
reflector at the hub's system IP; the session runs inside the edge's tunnel to the hub. Without a
hub there is no EVPN and the flood lists are static (every peer gets every BUM frame). A gateway
accepts a type-5 route only for a prefix its config lists for the advertising site
(``evpn.remote_prefixes``): every other gateway's ``evpn.prefixes`` with that gateway's system IP;
and how many routes each other site may give it (``evpn.remote_limits``: controller/route_budget.py).
Upgrades: every gateway under an upgrade profile (its own, else the enterprise's) gets the target
version and every uploaded bundle of it, one per model, as device-site URLs: the box picks its model's
and decides whether to install (nsg/upgrade/agent.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from ipaddress import IPv4Address
from urllib.parse import urlsplit

from controller.enterprise import AppDef, Enterprise, GatewayDef
from controller.route_budget import route_budget
from nsg.model import SCHEMA_VERSION, GatewayConfig, parse_config
from nsg.model.evpn import RemoteLimit


def _initiate(me: GatewayDef, peer: GatewayDef) -> str:
    """Only the side behind a NAT can open the way; between equals the lower system IP does."""
    if peer.behind_nat and not me.behind_nat:
        return "never"
    if me.behind_nat and not peer.behind_nat:
        return "always"
    return "auto"


def pair_psk(secret: str, a: IPv4Address, b: IPv4Address) -> str:
    """The key of one pair of gateways (by system IP, either order): HMAC-SHA256 of the pair under the
    enterprise secret (RFC 2104), base64url. Each gateway gets only the keys of the pairs it is in: a
    stolen box knows nothing that authenticates any other pair."""
    lo, hi = sorted((a, b))
    mac = hmac.new(secret.encode(), f"nsg-ike-psk|{lo}|{hi}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _peer(ent: Enterprise, me: GatewayDef, p: GatewayDef) -> dict:
    doc = {"name": p.name, "system_ip": str(p.system_ip), "endpoint": str(p.endpoint()), "initiate": _initiate(me, p)}
    if ent.ipsec is not None and ent.ipsec.auth == "psk":
        assert ent.ipsec.psk is not None
        doc["psk"] = pair_psk(ent.ipsec.psk, me.system_ip, p.system_ip)
    elif ent.ipsec is not None and p.serial is not None:
        doc["serial"] = p.serial  # its certificate must be the one issued to this device
    return doc


def _ipsec(ent: Enterprise) -> dict:
    assert ent.ipsec is not None
    doc = ent.ipsec.model_dump(mode="json", exclude_none=True, exclude={"psk"})
    if ent.ipsec.auth == "ldevid" and ent.crl is not None:
        doc["crl"] = ent.crl
    return doc


def _app(a: AppDef, image_base: str | None) -> dict:
    doc = a.model_dump(mode="json", exclude={"image_source", "image_sha256"}, exclude_defaults=True)
    doc["env"] = dict(a.env)
    doc["address"] = str(a.address)
    if a.image_sha256 and image_base:  # the tarball the controller serves, and the hash it must have
        doc["image_source"] = {"url": f"{image_base}/images/{a.image_sha256}", "sha256": a.image_sha256}
    return doc


def _upgrade(ent: Enterprise, g: GatewayDef) -> dict | None:
    profile = g.upgrade or ent.upgrade
    if profile is None or ent.image_base is None:
        return None
    bundles = sorted((b for b in ent.bundles if b.version == profile.version), key=lambda b: b.model)
    doc = {"version": profile.version, "retry": profile.retry,
           "bundles": [{"model": b.model, "url": f"{ent.image_base}/bundles/{b.sha256}", "sha256": b.sha256,
                        "size": b.size} for b in bundles]}
    if profile.commit_after_s is not None:
        doc["commit_after_s"] = profile.commit_after_s
    return doc


def _policy(ent: Enterprise, g: GatewayDef) -> dict:
    """The enterprise's policy for one gateway: workloads named by address, its own breakouts."""
    assert ent.policy is not None
    refs = ent.workload_address_refs()
    doc = ent.policy.model_dump(mode="json", exclude_defaults=True)
    for group in doc.get("groups", []):
        group["members"] = [refs.get(m, m) for m in group["members"]]
    for tenant in doc.get("tenants", []):
        for entry in tenant.get("acl", []):
            for side in ("src", "dst"):
                if side in entry:
                    entry[side] = refs.get(entry[side], entry[side])
    uplinks = {u.name for u in g.uplinks}
    doc["breakout"] = [b for b in doc.get("breakout", []) if b["uplink"] in uplinks]
    return doc


def _qos(ent: Enterprise, g: GatewayDef) -> dict | None:
    """The enterprise's QoS profile for one gateway: its uplinks with rates shaped, limiters on
    workloads by address (the hub gets shaping only). None when there is nothing to do there."""
    assert ent.qos is not None
    doc = ent.qos.model_dump(mode="json", exclude_defaults=True)
    doc["uplinks"] = [{"uplink": u.name, "egress_kbit": u.egress_kbit,
                       **({"ingress_kbit": u.ingress_kbit} if u.ingress_kbit else {})}
                      for u in g.uplinks if u.egress_kbit]
    refs = ent.workload_address_refs()
    doc["limiters"] = [{**lim, "target": refs.get(lim["target"], lim["target"])}
                       for lim in doc.get("limiters", []) if g.role == "edge"]
    if not doc["uplinks"] and not doc["limiters"]:
        return None
    return doc


def _fill_remote_prefixes(docs: Mapping[str, dict]) -> None:
    """Each EVPN gateway's ``evpn.remote_prefixes``: the type-5 prefixes every other gateway
    originates (its ``evpn.prefixes``), each with that gateway's system IP (the route's next hop);
    nothing else is accepted (nsg/evpn/routes.py)."""
    for name, doc in docs.items():
        if doc.get("evpn") is None:
            continue
        doc["evpn"]["remote_prefixes"] = [
            {"system_ip": other["system_ip"], "prefix": ep["prefix"]}
            for n, other in sorted(docs.items()) if n != name and other.get("evpn") is not None
            for ep in other["evpn"].get("prefixes", [])]


def with_remote_limits(configs: Mapping[str, GatewayConfig]) -> dict[str, GatewayConfig]:
    """``configs`` with each EVPN gateway's ``evpn.remote_limits``: for every other EVPN gateway whose
    LAN is bounded, the routes it can honestly announce (controller/route_budget.py), as its per-site
    limit here. The entries are made from validated configs (other gateways, distinct system IPs)."""
    budgets = {name: (cfg.system_ip, n) for name, cfg in sorted(configs.items())
               if cfg.evpn is not None and (n := route_budget(cfg)) is not None}
    out = {}
    for name, cfg in configs.items():
        if cfg.evpn is None:
            out[name] = cfg
            continue
        limits = tuple(RemoteLimit(system_ip=sip, max_routes=n) for other, (sip, n) in budgets.items()
                       if other != name)
        out[name] = cfg.model_copy(update={"evpn": cfg.evpn.model_copy(update={"remote_limits": limits})})
    return out


def with_remote_prefixes(configs: Mapping[str, GatewayConfig]) -> dict[str, GatewayConfig]:
    """``configs`` with every ``evpn.remote_prefixes`` rendered again from the others' ``evpn.prefixes``
    (and ``evpn.remote_limits`` from their LANs)
    (for configs changed after render: a lab giving one gateway a prefix). Raises ConfigError."""
    docs = {n: c.model_dump(mode="json") for n, c in configs.items()}
    _fill_remote_prefixes(docs)
    return with_remote_limits({n: parse_config(doc, source=f"gateway {n}") for n, doc in docs.items()})


def render(ent: Enterprise) -> dict[str, GatewayConfig]:
    """One validated GatewayConfig per gateway; raises ConfigError naming the gateway's field."""
    docs: dict[str, dict] = {}
    hubs = [h for h in ent.gateways if h.role == "hub"]
    for g in ent.gateways:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "generation": ent.generation,
            "system_ip": str(g.system_ip),
            "uplinks": [u.model_dump(mode="json", exclude={"public", "egress_kbit", "ingress_kbit"}, exclude_none=True)
                        for u in g.uplinks],
            "subnets": [
                {**s.model_dump(mode="json"), "ports": list(g.ports.get(s.name, ()))} for s in ent.subnets
            ] if g.role == "edge" else [],
            "peers": [_peer(ent, g, p) for p in ent.gateways if p.name != g.name],
            "transport": ent.transport,
            "behind_nat": g.behind_nat,
        }
        if hubs and g.role == "edge":
            doc["evpn"] = {"asn": ent.evpn_asn,
                           "peers": [{"address": str(h.system_ip), "asn": ent.evpn_asn} for h in hubs]}
        if g.apps:
            doc["apps"] = [_app(a, ent.image_base) for a in g.apps]
        if g.vms:
            doc["vms"] = [v.model_dump(mode="json", exclude_defaults=True) | {"address": str(v.address)}
                          for v in g.vms]
        if ent.policy is not None and g.role == "edge":
            doc["policy"] = _policy(ent, g)
        if ent.qos is not None and (qos := _qos(ent, g)) is not None:
            doc["qos"] = qos
        if g.role == "hub" and ent.image_base:
            # the hub is the controller's own overlay node, beside its device site: the hub's input
            # guard must let gateways reach that site (SZTP, EST, the channel, images) on its uplink
            port = urlsplit(ent.image_base).port or 443
            doc["uplink_services"] = [{"protocol": "tcp", "port": port}]
        if ent.ipsec is not None:
            doc["ipsec"] = _ipsec(ent)
        if (upgrade := _upgrade(ent, g)) is not None:
            doc["upgrade"] = upgrade
        docs[g.name] = doc
    _fill_remote_prefixes(docs)
    return with_remote_limits({name: parse_config(doc, source=f"gateway {name}") for name, doc in docs.items()})

"""The firewall policy as one nftables ruleset (libnftables JSON), in a table nsg owns: `inet nsg`.
Pure: config in, document out; the same config renders the same bytes.

Bridged traffic inside a subnet reaches the inet hooks through br_netfilter (the daemon turns on
net.bridge.bridge-nf-call-iptables; this kernel's bridge family has no conntrack and no reject), so
one forward chain sees both bridged and routed tenant traffic, with conntrack:

    forward (hook forward, policy accept)
      ct state established,related and ct mark has STATEFUL -> accept   (return traffic of allowed flows)
      per subnet: from its bridge to anything but its tenant's bridges (and its breakout uplink) -> drop
      from/to a tenant's bridges -> jump t_<tenant>
    t_<tenant>: the ACL in order, then the tenant's default; each entry counts into a named counter
    postrouting (hook postrouting, nat): from a breakout subnet out of its uplink -> masquerade

Subnets no tenant names form the tenant "default" (no ACL, default allow): between tenants nothing
passes, and nothing leaves for a WAN uplink unless the subnet breaks out there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, collapse_addresses
from typing import Any

from nsg.dataplane.desired import bridge_name
from nsg.model import GatewayConfig
from nsg.model.policy import PROTOCOLS, AclEntry, PolicyConfig, Tenant, parse_ref

FAMILY, TABLE = "inet", "nsg"
STATEFUL = 0x100  # ct mark bit: this flow was allowed by a stateful entry (its replies pass)
DEFAULT_TENANT = "default"
Json = dict[str, Any]


class PolicyRenderError(ValueError):
    """The policy cannot be rendered (a reference the config model should have caught)."""


@dataclass(frozen=True)
class Rendered:
    commands: tuple[Json, ...]  # the body of {"nftables": [...]}: replaces table inet nsg as a whole
    # named counters, in rule order: acl.<tenant>.<entry>, default.<tenant>, wall.<tenant> (what the
    # wall between tenants and toward uplinks without breakout dropped); names have no dots of their own
    counters: tuple[str, ...]


def _obj(kind: str, **fields: Any) -> Json:
    return {"add": {kind: {"family": FAMILY, "table": TABLE, **fields}}}


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _ip(field: str) -> Json:
    return {"payload": {"protocol": "ip", "field": field}}


def _prefix(net: IPv4Network) -> Any:
    return str(net.network_address) if net.prefixlen == 32 else {"prefix": {"addr": str(net.network_address),
                                                                           "len": net.prefixlen}}


def _names(names: list[str]) -> Any:
    return names[0] if len(names) == 1 else {"set": names}


def tenants_of(cfg: GatewayConfig, pol: PolicyConfig) -> list[Tenant]:
    """The configured tenants, plus "default" for the subnets none of them names."""
    named = {s for t in pol.tenants for s in t.subnets}
    rest = tuple(s.name for s in cfg.subnets if s.name not in named)
    return [*pol.tenants, *([Tenant(name=DEFAULT_TENANT, subnets=rest, default="allow")] if rest else [])]


class _Resolver:
    """Endpoint references -> prefixes, from the config's subnets, apps, VMs and groups."""

    def __init__(self, cfg: GatewayConfig, pol: PolicyConfig):
        self.subnets = {s.name: s.cidr for s in cfg.subnets}
        self.hosts = {("app", a.name): a.address for a in cfg.apps} | {("vm", v.name): v.address for v in cfg.vms}
        self.groups = {g.name: g for g in pol.groups}

    def prefixes(self, ref: str) -> list[IPv4Network]:
        kind, name = parse_ref(ref)
        if kind == "cidr":
            return [IPv4Network(name)]
        if kind == "subnet" and name in self.subnets:
            return [self.subnets[name]]
        if (kind, name) in self.hosts:
            return [IPv4Network(f"{self.hosts[(kind, name)]}/32")]
        if kind == "group" and name in self.groups:
            out = [p for m in self.groups[name].members for p in self.prefixes(m)]
            return list(collapse_addresses(out))
        raise PolicyRenderError(f"{ref!r} names nothing this config has")


def _endpoint(r: _Resolver, ref: str, field: str) -> Json | None:
    kind, name = parse_ref(ref)
    if kind == "any":
        return None
    if kind == "group":
        r.prefixes(ref)  # it must resolve
        return _match(_ip(field), f"@g_{name}")
    nets = r.prefixes(ref)
    return _match(_ip(field), _prefix(nets[0]) if len(nets) == 1 else {"set": [_prefix(n) for n in nets]})


def _ports(proto: str, field: str, ports: tuple) -> Json:
    items = [p.first if p.first == p.last else {"range": [p.first, p.last]} for p in ports]
    return _match({"payload": {"protocol": proto, "field": field}}, items[0] if len(items) == 1 else {"set": items})


def _entry_rules(tenant: str, e: AclEntry, r: _Resolver) -> list[list[Json]]:
    """One entry -> its rules' expressions (a reject of any protocol is two rules: TCP gets a reset)."""
    counter = {"counter": f"acl.{tenant}.{e.name}"}
    m: list[Json] = [x for x in (_endpoint(r, e.src, "saddr"), _endpoint(r, e.dst, "daddr")) if x]
    if e.protocol != "any":
        m.append(_match(_meta("l4proto"), PROTOCOLS.get(e.protocol, e.protocol)))  # type: ignore[arg-type]
    if e.src_ports:
        m.append(_ports(str(e.protocol), "sport", e.src_ports))
    if e.dst_ports:
        m.append(_ports(str(e.protocol), "dport", e.dst_ports))
    if e.dscp is not None:
        m.append(_match(_ip("dscp"), e.dscp))
    log = [{"log": {"prefix": f"nsg {tenant}/{e.name} "}}] if e.log else []
    if e.action == "allow":
        mark = [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"|": [{"ct": {"key": "mark"}}, STATEFUL]}}}]
        return [[*m, counter, *log, *(mark if e.stateful else []), {"accept": None}]]
    if e.action == "drop":
        return [[*m, counter, *log, {"drop": None}]]
    icmpx = {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
    if e.protocol == "tcp":
        return [[*m, counter, *log, {"reject": {"type": "tcp reset"}}]]
    if e.protocol == "any":
        tcp = _match(_meta("l4proto"), 6)
        return [[*m, tcp, counter, *log, {"reject": {"type": "tcp reset"}}], [*m, counter, *log, icmpx]]
    return [[*m, counter, *log, icmpx]]


def render(cfg: GatewayConfig, uplink_ifaces: Mapping[str, str]) -> Rendered:
    """``uplink_ifaces``: uplink name -> interface (breakout leaves through it)."""
    pol = cfg.policy
    if pol is None:
        raise PolicyRenderError("the config has no policy")
    r = _Resolver(cfg, pol)
    tenants = tenants_of(cfg, pol)
    vni = {s.name: s.vni for s in cfg.subnets}
    bridges = {t.name: [bridge_name(vni[s]) for s in t.subnets] for t in tenants}
    breakout = {b.subnet: uplink_ifaces[b.uplink] for b in pol.breakout if b.uplink in uplink_ifaces}
    cmds: list[Json] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for g in pol.groups:
        elems = [_prefix(n) for n in r.prefixes(f"group:{g.name}")]
        cmds.append(_obj("set", name=f"g_{g.name}", type="ipv4_addr", flags=["interval"], elem=elems))
    counters: list[str] = []
    rules: list[tuple[str, list[Json]]] = []
    fwd: list[list[Json]] = [[
        _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
        _match({"&": [{"ct": {"key": "mark"}}, STATEFUL]}, STATEFUL), {"accept": None}]]
    for t in tenants:
        counters.append(f"wall.{t.name}")
        for s in t.subnets:
            allowed = [*bridges[t.name], *([breakout[s]] if s in breakout else [])]
            fwd.append([_match(_meta("iifname"), bridge_name(vni[s])),
                        _match(_meta("oifname"), _names(allowed), "!="), {"counter": f"wall.{t.name}"}, {"drop": None}])
    for t in tenants:
        for key in ("iifname", "oifname"):
            fwd.append([_match(_meta(key), _names(bridges[t.name])), {"jump": {"target": f"t_{t.name}"}}])
        for e in t.acl:
            counters.append(f"acl.{t.name}.{e.name}")
            rules += [(f"t_{t.name}", exprs) for exprs in _entry_rules(t.name, e, r)]
        counters.append(f"default.{t.name}")
        default: list[Json] = [{"counter": f"default.{t.name}"}]
        if t.default == "allow":
            default += [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"|": [{"ct": {"key": "mark"}},
                                                                                     STATEFUL]}}}, {"accept": None}]
        else:
            default.append({"drop": None})
        rules.append((f"t_{t.name}", default))
    for name in counters:
        cmds.append(_obj("counter", name=name))
    cmds.append(_obj("chain", name="forward", type="filter", hook="forward", prio=0, policy="accept"))
    for t in tenants:
        cmds.append(_obj("chain", name=f"t_{t.name}"))
    cmds.append(_obj("chain", name="postrouting", type="nat", hook="postrouting", prio=100, policy="accept"))
    for exprs in fwd:
        cmds.append(_obj("rule", chain="forward", expr=exprs))
    for chain, exprs in rules:
        cmds.append(_obj("rule", chain=chain, expr=exprs))
    for s, iface in sorted(breakout.items()):
        net = next(x.cidr for x in cfg.subnets if x.name == s)
        cmds.append(_obj("rule", chain="postrouting", expr=[
            _match(_ip("saddr"), _prefix(net)), _match(_meta("oifname"), iface),
            {"counter": None}, {"masquerade": None}]))
    return Rendered(tuple(cmds), tuple(counters))

"""The firewall policy as one nftables ruleset (libnftables JSON), in a table nsg owns: `inet nsg`.
Pure: config in, document out; the same config renders the same document.

Bridged traffic inside a subnet reaches the inet hooks through br_netfilter (the daemon turns on
net.bridge.bridge-nf-call-iptables; this kernel's bridge family has no conntrack and no reject), so
one forward chain sees both bridged and routed tenant traffic, with conntrack:

    forward (hook forward, policy accept)
      ct state established,related and ct mark has STATEFUL -> accept   (return traffic of allowed flows)
      per subnet: from its bridge to anything but its tenant's bridges (and its breakout uplink) -> drop
      from/to a tenant's bridges -> jump t_<tenant>
    t_<tenant>: the ACL in order, then the tenant's default
    postrouting (hook postrouting, nat): from a breakout subnet out of its uplink -> masquerade

Every rule that decides has a counter and a comment naming what it counts: acl.<tenant>.<entry>,
default.<tenant>, wall.<tenant> (what the walls between tenants and toward uplinks without breakout
dropped), breakout.<subnet>. Anonymous counters, not named counter objects: 5,000 of those made nft
0.3 s slower to load the same ruleset. A re-render can start each counter where it was (``start``).

Subnets no tenant names form the tenant "default" (no ACL, default allow): between tenants nothing
passes, and nothing leaves for a WAN uplink unless the subnet breaks out there.

Speed: nft itself needs ~0.7 s to load 5,000 rules from JSON on the development box, so the Python
side must stay small. The document is written as text from fragments, not built as dicts and
dumped: every string in it is a name, address or keyword the config model has already validated
(names are [a-z0-9_-], interfaces [A-Za-z0-9_.-]), so nothing needs escaping; json.loads of the
output is what the tests read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, collapse_addresses

from nsg.dataplane.desired import bridge_name
from nsg.model import GatewayConfig
from nsg.model.policy import PROTOCOLS, AclEntry, PolicyConfig, Tenant

FAMILY, TABLE = "inet", "nsg"
STATEFUL = 0x100  # ct mark bit: this flow was allowed by a stateful entry (its replies pass)
DEFAULT_TENANT = "default"

_HEAD = f'"family": "{FAMILY}", "table": "{TABLE}"'
_ACCEPT = '{"accept": null}'
_DROP = '{"drop": null}'
_MARK = ('{"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"|": [{"ct": {"key": "mark"}}, '
         f'{STATEFUL}]}}}}}}')
_RESET = '{"reject": {"type": "tcp reset"}}'
_ICMPX = '{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}'
_COUNTER = '{"counter": null}'
_SADDR = '{"payload": {"protocol": "ip", "field": "saddr"}}'
_DADDR = '{"payload": {"protocol": "ip", "field": "daddr"}}'
_L4 = '{"meta": {"key": "l4proto"}}'


class PolicyRenderError(ValueError):
    """The policy cannot be rendered (a reference the config model should have caught)."""


@dataclass(frozen=True)
class Rendered:
    document: str  # {"nftables": [...]}: replaces table inet nsg as a whole, in one transaction
    counters: tuple[str, ...]  # what the rules count (their comments), in rule order, each once

    @property
    def commands(self) -> list[dict]:
        return json.loads(self.document)["nftables"]


def _match(left: str, right: str, op: str = "==") -> str:
    return f'{{"match": {{"op": "{op}", "left": {left}, "right": {right}}}}}'


def _meta(key: str) -> str:
    return f'{{"meta": {{"key": "{key}"}}}}'


def _str(text: str) -> str:
    return f'"{text}"'


def _prefix(text: str) -> str:
    """A validated "a.b.c.d" or "a.b.c.d/n" -> nft's value (an address, or a prefix)."""
    addr, _, length = text.partition("/")
    if not length or length == "32":
        return f'"{addr}"'
    return f'{{"prefix": {{"addr": "{addr}", "len": {int(length)}}}}}'


def _names(names: list[str]) -> str:
    return _str(names[0]) if len(names) == 1 else '{"set": [' + ", ".join(map(_str, names)) + "]}"


def tenants_of(cfg: GatewayConfig, pol: PolicyConfig) -> list[Tenant]:
    """The configured tenants, plus "default" for the subnets none of them names."""
    named = {s for t in pol.tenants for s in t.subnets}
    rest = tuple(s.name for s in cfg.subnets if s.name not in named)
    return [*pol.tenants, *([Tenant(name=DEFAULT_TENANT, subnets=rest, default="allow")] if rest else [])]


class _Resolver:
    """Endpoint references -> nft values, from the config's subnets, apps, VMs and groups (memoized:
    large ACLs repeat their endpoints)."""

    def __init__(self, cfg: GatewayConfig, pol: PolicyConfig):
        self.refs: dict[str, str] = {f"subnet:{s.name}": str(s.cidr) for s in cfg.subnets}
        self.refs |= {f"app:{a.name}": f"{a.address}/32" for a in cfg.apps}
        self.refs |= {f"vm:{v.name}": f"{v.address}/32" for v in cfg.vms}
        self.groups = {g.name: g for g in pol.groups}
        self._memo: dict[str, str] = {}

    def group(self, name: str) -> list[IPv4Network]:
        if name not in self.groups:
            raise PolicyRenderError(f"group:{name} is not a group of the policy")
        return list(collapse_addresses(IPv4Network(self._text(m)) for m in self.groups[name].members))

    def _text(self, ref: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        if ":" in ref:
            raise PolicyRenderError(f"{ref!r} names nothing this config has")
        return ref  # a prefix or an address, as validated

    def value(self, ref: str) -> str:
        """The right-hand side matching ``ref`` (an address, a prefix, or @g_<group>)."""
        got = self._memo.get(ref)
        if got is None:
            if ref.startswith("group:"):
                self.group(ref[6:])  # it must resolve
                got = f'"@g_{ref[6:]}"'
            else:
                got = _prefix(self._text(ref))
            self._memo[ref] = got
        return got


def _ports(proto: str, field: str, ports: tuple) -> str:
    items = [str(p.first) if p.first == p.last else f'{{"range": [{p.first}, {p.last}]}}' for p in ports]
    right = items[0] if len(items) == 1 else '{"set": [' + ", ".join(items) + "]}"
    return _match(f'{{"payload": {{"protocol": "{proto}", "field": "{field}"}}}}', right)


def _entry_rules(e: AclEntry, r: _Resolver) -> list[list[str]]:
    """One entry -> its rules' expressions (a reject of any protocol is two rules: TCP gets a reset)."""
    m: list[str] = []
    if e.src != "any":
        m.append(_match(_SADDR, r.value(e.src)))
    if e.dst != "any":
        m.append(_match(_DADDR, r.value(e.dst)))
    if e.protocol != "any":
        m.append(_match(_L4, str(PROTOCOLS.get(e.protocol, e.protocol))))  # type: ignore[arg-type]
    if e.src_ports:
        m.append(_ports(str(e.protocol), "sport", e.src_ports))
    if e.dst_ports:
        m.append(_ports(str(e.protocol), "dport", e.dst_ports))
    if e.dscp is not None:
        m.append(_match('{"payload": {"protocol": "ip", "field": "dscp"}}', str(e.dscp)))
    log = [f'{{"log": {{"prefix": "nsg {e.name} "}}}}'] if e.log else []
    if e.action == "allow":
        return [[*m, _COUNTER, *log, *([_MARK] if e.stateful else []), _ACCEPT]]
    if e.action == "drop":
        return [[*m, _COUNTER, *log, _DROP]]
    if e.protocol == "tcp":
        return [[*m, _COUNTER, *log, _RESET]]
    if e.protocol == "any":
        return [[*m, _match(_L4, "6"), _COUNTER, *log, _RESET], [*m, _COUNTER, *log, _ICMPX]]
    return [[*m, _COUNTER, *log, _ICMPX]]


def render(cfg: GatewayConfig, uplink_ifaces: Mapping[str, str],
           start: Mapping[str, Mapping[str, int]] | None = None) -> Rendered:
    """``uplink_ifaces``: uplink name -> interface (breakout leaves through it). ``start``: counts to
    begin from, by comment ({"packets", "bytes"}), given to the first rule of each comment."""
    pol = cfg.policy
    if pol is None:
        raise PolicyRenderError("the config has no policy")
    start = start or {}
    r = _Resolver(cfg, pol)
    tenants = tenants_of(cfg, pol)
    vni = {s.name: s.vni for s in cfg.subnets}
    bridges = {t.name: [bridge_name(vni[s]) for s in t.subnets] for t in tenants}
    breakout = {b.subnet: uplink_ifaces[b.uplink] for b in pol.breakout if b.uplink in uplink_ifaces}
    table = f'{{"family": "{FAMILY}", "name": "{TABLE}"}}'
    out = [f'{{"{verb}": {{"table": {table}}}}}' for verb in ("add", "delete", "add")]
    for g in pol.groups:
        elems = ", ".join(_prefix(str(n)) for n in r.group(g.name))
        out.append(f'{{"add": {{"set": {{{_HEAD}, "name": "g_{g.name}", "type": "ipv4_addr", '
                   f'"flags": ["interval"], "elem": [{elems}]}}}}}}')
    out.append(f'{{"add": {{"chain": {{{_HEAD}, "name": "forward", "type": "filter", "hook": "forward", '
               f'"prio": 0, "policy": "accept"}}}}}}')
    out += [f'{{"add": {{"chain": {{{_HEAD}, "name": "t_{t.name}"}}}}}}' for t in tenants]
    out.append(f'{{"add": {{"chain": {{{_HEAD}, "name": "postrouting", "type": "nat", "hook": "postrouting", '
               f'"prio": 100, "policy": "accept"}}}}}}')
    counters: dict[str, None] = {}

    def rule(chain: str, exprs: list[str], comment: str | None = None) -> None:
        tail = ""
        if comment is not None:
            tail = f', "comment": "{comment}"'
            if comment not in counters:
                counters[comment] = None
                was = start.get(comment)
                if was:
                    exprs = [f'{{"counter": {{"packets": {int(was["packets"])}, "bytes": {int(was["bytes"])}}}}}'
                             if x == _COUNTER else x for x in exprs]
        out.append(f'{{"add": {{"rule": {{{_HEAD}, "chain": "{chain}", "expr": [{", ".join(exprs)}]{tail}}}}}}}')

    rule("forward", [_match('{"ct": {"key": "state"}}', '["established", "related"]', "in"),
                     _match(f'{{"&": [{{"ct": {{"key": "mark"}}}}, {STATEFUL}]}}', str(STATEFUL)), _ACCEPT])
    for t in tenants:
        for s in t.subnets:
            allowed = [*bridges[t.name], *([breakout[s]] if s in breakout else [])]
            rule("forward", [_match(_meta("iifname"), _str(bridge_name(vni[s]))),
                             _match(_meta("oifname"), _names(allowed), "!="), _COUNTER, _DROP], f"wall.{t.name}")
    for t in tenants:
        for key in ("iifname", "oifname"):
            rule("forward", [_match(_meta(key), _names(bridges[t.name])), f'{{"jump": {{"target": "t_{t.name}"}}}}'])
        chain = f"t_{t.name}"
        for e in t.acl:
            for exprs in _entry_rules(e, r):
                rule(chain, exprs, f"acl.{t.name}.{e.name}")
        rule(chain, [_COUNTER, _MARK, _ACCEPT] if t.default == "allow" else [_COUNTER, _DROP], f"default.{t.name}")
    for s, iface in sorted(breakout.items()):
        net = next(str(x.cidr) for x in cfg.subnets if x.name == s)
        rule("postrouting", [_match(_SADDR, _prefix(net)), _match(_meta("oifname"), _str(iface)), _COUNTER,
                             '{"masquerade": null}'], f"breakout.{s}")
    return Rendered('{"nftables": [' + ",\n".join(out) + "]}", tuple(counters))

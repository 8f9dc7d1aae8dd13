"""QoS as a plan: HTB on each shaped uplink (and on an ifb for its ingress), one class per forwarding
class, and the nftables rules that pick the class. Pure: config in, plan out.

    <uplink> root 1: htb default 1:<default class>
      1:1   rate = the uplink's egress rate (ceil the same: the line never queues, we do)
        1:10 .. 1:17   forwarding classes A .. H: rate = guaranteed share, ceil = ceiling share,
                       prio = priority (lower first); each with a short pfifo
    <uplink> ingress -> u32 match-all -> mirred redirect -> ifb<hash> with the same tree at the
                       ingress rate (classes picked by u32 on the DSCP: no netfilter before ifb)

Egress classification is nftables: table inet nsg_qos, chain postrouting (priority mangle) sets
`meta priority` to the class id by DSCP for packets leaving a shaped uplink; HTB takes a packet whose
priority names one of its leaf classes straight to it. The DSCP of encrypted traffic is the tenant
packet's (the VXLAN device inherits it, the ESP engine copies it out), so shaping holds for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from nsg.model import GatewayConfig
from nsg.model.qos import CLASS_NAMES, QosConfig

QOS_TABLE = "nsg_qos"
LEAF_LIMIT = 200  # packets queued per class before tail drop: the bulk class's queue bounds its delay


def minor(name: str) -> int:
    """Forwarding class -> HTB minor, written in hex by tc: A -> 1:10 ... H -> 1:17."""
    return 0x10 + CLASS_NAMES.index(name)


def ifb_name(iface: str) -> str:
    return "ifb" + hashlib.sha256(iface.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ClassPlan:
    name: str
    minor: int
    rate_kbit: int
    ceil_kbit: int
    prio: int


@dataclass(frozen=True)
class LinkPlan:
    """One device's HTB tree: an uplink (egress) or the ifb carrying its ingress."""

    dev: str
    rate_kbit: int
    classes: tuple[ClassPlan, ...]
    default_minor: int
    u32_dscp: tuple[tuple[int, int], ...] = ()  # (dscp, minor) filters: the ifb's classification
    ingress_of: str | None = None  # for an ifb: the uplink whose ingress is redirected into it

    def argv(self) -> list[list[str]]:
        """tc command lines (argv, no shell) that build this tree on a device with no root qdisc."""
        d = self.dev
        out = [["qdisc", "add", "dev", d, "root", "handle", "1:", "htb", "default", f"{self.default_minor:x}"],
               ["class", "add", "dev", d, "parent", "1:", "classid", "1:1", "htb", "rate", f"{self.rate_kbit}kbit",
                "ceil", f"{self.rate_kbit}kbit", "quantum", str(_quantum(self.rate_kbit))]]
        for c in self.classes:
            out.append(["class", "add", "dev", d, "parent", "1:1", "classid", f"1:{c.minor:x}", "htb",
                        "rate", f"{c.rate_kbit}kbit", "ceil", f"{c.ceil_kbit}kbit", "prio", str(c.prio),
                        "quantum", str(_quantum(c.rate_kbit))])
            out.append(["qdisc", "add", "dev", d, "parent", f"1:{c.minor:x}", "handle", f"{c.minor:x}:",
                        "pfifo", "limit", str(LEAF_LIMIT)])
        for dscp, m in self.u32_dscp:
            out.append(["filter", "add", "dev", d, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                        "match", "ip", "tos", f"{dscp << 2:#04x}", "0xfc", "flowid", f"1:{m:x}"])
        return out


def _quantum(rate_kbit: int) -> int:
    """Bytes a class may send per round: rate/10 per second bounded to 1-60 MTUs (tc warns outside)."""
    return max(1514, min(60 * 1514, rate_kbit * 1000 // 8 // 10))


@dataclass(frozen=True)
class QosPlan:
    links: tuple[LinkPlan, ...]  # egress trees, then ingress (ifb) trees
    nft: str  # the classification and limiter table, a libnftables JSON document replacing table inet nsg_qos
    limiters: bool = False  # policers present (they need bridged traffic in the inet hooks)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps([[lk.argv(), lk.ingress_of] for lk in self.links]).encode()
                              + self.nft.encode()).hexdigest()[:16]


def _tree(dev: str, rate: int, qos: QosConfig, **extra) -> LinkPlan:
    classes = tuple(ClassPlan(c.name, minor(c.name), max(8, int(rate * c.guaranteed_pct / 100)),
                              max(8, int(rate * c.ceiling_pct / 100)), c.priority) for c in qos.classes)
    return LinkPlan(dev, rate, classes, minor(qos.default_class), **extra)


def plan(cfg: GatewayConfig, uplink_ifaces: Mapping[str, str]) -> QosPlan:
    qos = cfg.qos
    if qos is None:
        raise ValueError("the config has no qos")
    egress, ingress = [], []
    dscp = tuple(sorted((d, minor(c)) for d, c in qos.dscp.items()))
    for shaped in qos.uplinks:
        iface = uplink_ifaces[shaped.uplink]
        egress.append(_tree(iface, shaped.egress_kbit, qos))
        if shaped.ingress_kbit is not None:
            ingress.append(_tree(ifb_name(iface), shaped.ingress_kbit, qos, u32_dscp=dscp, ingress_of=iface))
    targets = {f"subnet:{x.name}": str(x.cidr) for x in cfg.subnets}
    targets |= {f"app:{a.name}": f"{a.address}/32" for a in cfg.apps} | {f"vm:{v.name}": f"{v.address}/32"
                                                                           for v in cfg.vms}
    return QosPlan(tuple(egress + ingress), _nft(qos, [lk.dev for lk in egress], targets), bool(qos.limiters))


def _limiter_rules(qos: QosConfig, targets: Mapping[str, str], head: str) -> list[str]:
    """Policers in a forward chain: what a target sends (saddr) or receives (daddr) above its rate is dropped.
    Bridged traffic reaches this hook through br_netfilter (see nsg.policy.nft)."""
    out = []
    for lim in qos.limiters:
        net = targets.get(lim.target, lim.target)
        addr, _, length = net.partition("/")
        value = f'"{addr}"' if not length or length == "32" else f'{{"prefix": {{"addr": "{addr}", "len": {length}}}}}'
        limit = (f'{{"limit": {{"rate": {max(1, lim.rate_kbit // 8)}, "rate_unit": "kbytes", "per": "second", '
                 f'"burst": {lim.burst_kbyte}, "burst_unit": "kbytes", "inv": true}}}}')
        for side, field in (("from", "saddr"), ("to", "daddr")):
            if lim.direction in ("both", side):
                match = f'{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "{field}"}}}}, ' \
                        f'"right": {value}}}}}'
                out.append(f'{{"add": {{"rule": {{{head}, "chain": "limit", "expr": [{match}, {limit}, '
                           f'{{"counter": null}}, {{"drop": null}}], "comment": "limit.{lim.name}.{side}"}}}}}}')
    return out


def _nft(qos: QosConfig, ifaces: list[str], targets: Mapping[str, str]) -> str:
    head = f'"family": "inet", "table": "{QOS_TABLE}"'
    table = f'{{"family": "inet", "name": "{QOS_TABLE}"}}'
    out = [f'{{"{verb}": {{"table": {table}}}}}' for verb in ("add", "delete", "add")]
    out.append(f'{{"add": {{"chain": {{{head}, "name": "postrouting", "type": "filter", "hook": "postrouting", '
               f'"prio": -150, "policy": "accept"}}}}}}')
    out.append(f'{{"add": {{"chain": {{{head}, "name": "limit", "type": "filter", "hook": "forward", '
               f'"prio": -10, "policy": "accept"}}}}}}')
    out += _limiter_rules(qos, targets, head)
    if not ifaces:
        return '{"nftables": [' + ",\n".join(out) + "]}"
    names = ", ".join(f'"{i}"' for i in ifaces)
    oif = f'{{"match": {{"op": "==", "left": {{"meta": {{"key": "oifname"}}}}, "right": {{"set": [{names}]}}}}}}'

    def prio(m: int) -> str:
        return f'{{"mangle": {{"key": {{"meta": {{"key": "priority"}}}}, "value": "1:{m:x}"}}}}'

    for d, c in sorted(qos.dscp.items()):
        field = '{"payload": {"protocol": "ip", "field": "dscp"}}'
        dscp = f'{{"match": {{"op": "==", "left": {field}, "right": {d}}}}}'
        out.append(f'{{"add": {{"rule": {{{head}, "chain": "postrouting", "expr": [{oif}, {dscp}, {prio(minor(c))}, '
                   f'{{"accept": null}}], "comment": "dscp.{d}"}}}}}}')
    out.append(f'{{"add": {{"rule": {{{head}, "chain": "postrouting", "expr": [{oif}, '
               f'{prio(minor(qos.default_class))}], "comment": "default"}}}}}}')
    return '{"nftables": [' + ",\n".join(out) + "]}"

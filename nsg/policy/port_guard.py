"""LAN port security and the overlay frame guard: table bridge nsg_port. Pure: config in, nftables
document out; nft's JSON listing in, typed counters out. Applying and reading is in port_guard_apply.py.

A host on a LAN port must not be able to make the gateway learn (and announce over EVPN to every site)
an unbounded number of MACs, and a remote site must not be able to pose as a local host or as the
subnet's gateway. Like a switch's port security. The box's own workloads are hosts on the same bridges
(an app's veth, a VM's TAP): a compromised container or guest is a LAN attacker too, so each workload
port is guarded like a LAN port, with a bound of its own (WORKLOAD_MAX_MACS):

    table bridge nsg_port
      set macs.<port>  type ether_addr, size max_macs, timeout 300 s (the bridge's ageing), dynamic
      prerouting (hook prerouting, priority -300, policy accept)
        iifname vmap { <LAN or workload port>: goto port.<port>, vx-<vni>: goto overlay.<vx-vni> }
        meta ibrname br-<vni> -> count "<br-vni>.stray", drop    (each subnet with port security, where
                                                                  the kernel has nft's bridge meta)
      input (hook input, priority -300, policy accept)
        ether daddr 01:80:c2:00:00:0X (link-local) -> the same vmap, the same stray rules
      port.<port>:     ether saddr @macs.<port>  update @macs.<port> (refresh) -> accept
                       limit rate over learn_rate/s burst learn_burst -> count "<port>.rate", drop
                       add @macs.<port> (fails when the set holds max_macs) -> accept
                       count "<port>.full", drop
      overlay.<vx>:    ARP reply with sender IP = the subnet's gateway -> count "<vx>.gateway_arp", drop
                       other ARP with sender IP = gateway and a sender MAC other than the anycast
                         gateway MAC -> count "<vx>.gateway_arp", drop
                       ether saddr @macs.<p> for each guarded LAN or workload port p of the subnet
                         -> count "<vx>.spoof", drop
                       (end of chain: back to the base chain's policy, accept)

Every port of a guarded subnet's bridge is named in the vmap, or it is a stray: the bridge of a subnet
with port security is closed to ports nsg has not named (the "stray" rule matches by bridge, meta
ibrname, so it covers a port whatever its name and whenever it joined). The vmap uses goto: a port's
chain never falls back into the stray rules. meta ibrname needs CONFIG_NFT_BRIDGE_META (nft_meta_bridge),
which some kernels lack (this development machine's 6.18 does): port_guard_apply probes for it with a
dry run and renders the stray rules only where it loads (``by_bridge``); elsewhere the ports are guarded
by name alone, which covers every port nsg puts on a bridge (below) but not a foreign one, nor a new
LAN port in the millisecond between the dataplane's part and this one. Who is on a tenant bridge, and
when its name gets here:

- LAN ports: the config's. The dataplane part puts them on the bridge, this part runs a millisecond
  later in the same pass; a frame in between is dropped as a stray (closed, not open, while it races).
- Workload ports: an app's veth (containers.spec.AppSpec.host_ifname) and a VM's TAP (VmSpec.tap) are
  named from the workload's name alone, so nsg.compose knows them from the config before the
  workload exists, and nsg.engine sets this part before the workloads part hands the supervisors their
  specs. The vmap matches iifname when a frame arrives (a name, not an ifindex: a device made later,
  or made again by a re-attach, matches from its first frame), so no frame from a workload port is
  ever unguarded. If this part fails, the engine stops there and the workload is not started. A
  workload taken out of the config loses its name here before its supervisor stops it: its last
  frames are strays. The table stays in the kernel across a daemon restart (only --flush-on-exit
  removes it), and so do the workloads the next daemon adopts.
- Anything else (a veth someone else put there): a stray, dropped and counted until the dataplane
  releases it from the bridge at its next pass (nsg.dataplane.planner: only LAN and workload ports
  stay). Known gap: an unnamed port gets no per-port set (nft cannot bound elements per key), so it
  gets nothing at all rather than a share of one.
- A subnet with port_security null: its bridge is open, its LAN and workload ports unguarded (the
  operator's choice for the subnet); its overlay keeps the gateway-ARP guard.

Why this drops before the bridge learns (Linux net/bridge/br_input.c, checked on 6.1 and 6.18 by
tests/netns/test_port_guard.py): br_handle_frame() runs the NF_BR_PRE_ROUTING hooks and only then
br_handle_frame_finish(), which calls br_fdb_update(): every prerouting chain, whatever its priority,
sees the frame before it is learned. -300 puts ours ahead of filter (-200) and of br_netfilter (0), so
a dropped frame never reaches conntrack or the tenant's firewall. Link-local destinations
(01:80:c2:00:00:0X) take another path: either NF_BR_LOCAL_IN and then learning (the input chain covers
those), or, for LLDP (and STP BPDUs with STP on), learning with no netfilter hook at all. Those are
closed by the bridge option no_linklocal_learn (port_guard_apply.linklocal_learning_off); the kernel
has no per-port learning limit (6.18 has a bridge-wide IFLA_BR_FDB_MAX_LEARNED only, 6.1 none).

A frame whose source MAC is multicast or zero never gets here: br_handle_frame() drops it first.

Trade-offs: a host that moves from this site to another is refused from the overlay until its entry
here ages out (up to 300 s without frames from it on the LAN port). A port that holds max_macs accepts
a new host only once one ages out. While a port is full, most frames from new MACs are counted as
"rate" (the rate is checked first, so a flood cannot buy a place by being fast); the ones within the
rate are counted as "full".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from nsg.dataplane.desired import anycast_mac, bridge_name, vxlan_name
from nsg.model import GatewayConfig
from nsg.model.config import WORKLOAD_MAX_MACS

FAMILY, TABLE = "bridge", "nsg_port"
PRIORITY = -300  # bridge "dstnat": ahead of filter (-200) and br_netfilter (NF_BR_PRI_BRNF, 0)
MAC_AGEING_S = 300  # the bridge's default ageing_time (BR_DEFAULT_AGEING_TIME, 300 s); nsg keeps it
LINK_LOCAL = ("01:80:c2:00:00:00", "ff:ff:ff:ff:ff:f0")  # IEEE 802.1Q table 8-1 reserved addresses

# Drop reasons, one named counter each: "<port>.<reason>"
FULL = "full"  # a new MAC while the LAN (or workload) port already holds max_macs
RATE = "rate"  # a new MAC beyond learn_rate per second (after learn_burst)
SPOOF = "spoof"  # from the overlay, with the source MAC of a host learned on a local LAN or workload port
GATEWAY_ARP = "gateway_arp"  # from the overlay, ARP claiming the subnet gateway's address
STRAY = "stray"  # from a port of a guarded subnet's bridge that is not named here (counted per bridge)
LAN_REASONS = (FULL, RATE)
OVERLAY_REASONS = (GATEWAY_ARP, SPOOF)
BRIDGE_REASONS = (STRAY,)
REASONS = (*LAN_REASONS, *OVERLAY_REASONS, *BRIDGE_REASONS)


@dataclass(frozen=True)
class WorkloadPort:
    """A bridge port nsg makes for one of its own workloads (an app's veth host end, a VM's TAP): what
    nsg.compose tells port_guard_for, from the workloads' specs."""

    name: str  # interface name
    bridge: str  # the bridge it joins
    owner: str  # "app web", "vm db": for logs and people


@dataclass(frozen=True)
class LanPort:
    """A guarded port: a LAN port of the config, or a workload's (then ``workload`` names it)."""

    name: str  # interface name
    bridge: str
    max_macs: int
    learn_rate: int  # new MACs per second
    learn_burst: int
    workload: str | None = None  # "app web", "vm db"; None: a LAN port


@dataclass(frozen=True)
class Overlay:
    name: str  # vx-<vni>
    bridge: str  # br-<vni>
    gateway: str  # the subnet gateway's IPv4 address (the box holds it on the bridge)
    gateway_mac: str  # the anycast gateway MAC, the same at every site
    local_ports: tuple[str, ...]  # the subnet's guarded LAN and workload ports: their MACs are "known locally"
    closed: bool = False  # port security on: a port of the bridge not named in the table is a stray


@dataclass(frozen=True)
class PortGuard:
    ports: tuple[LanPort, ...]
    overlays: tuple[Overlay, ...]
    ageing_s: int = MAC_AGEING_S

    @property
    def bridges(self) -> tuple[str, ...]:
        return tuple(sorted({o.bridge for o in self.overlays} | {p.bridge for p in self.ports}))


def port_guard_for(cfg: GatewayConfig, workloads: Iterable[WorkloadPort] = ()) -> PortGuard:
    """Every subnet gets an overlay guard; in subnets with port_security, the LAN ports get its limits,
    the workload ports on its bridge its rate and at most WORKLOAD_MAX_MACS, and the bridge is closed
    to any other port. ``workloads``: every app's and VM's port (nsg.compose gives them all; one left
    out would be a stray, dropped whole, or with no bridge meta in the kernel, unguarded). A name is
    guarded once (a vmap holds a key once): a LAN port's name stays the LAN port's, and of workload
    ports with one name the first is taken."""
    lan = {p for s in cfg.subnets for p in s.ports}
    on_bridge: dict[str, list[WorkloadPort]] = {}
    for w in {w.name: w for w in reversed(list(workloads)) if w.name not in lan}.values():
        on_bridge.setdefault(w.bridge, []).append(w)
    ports: list[LanPort] = []
    overlays: list[Overlay] = []
    for s in sorted(cfg.subnets, key=lambda s: s.vni):
        br, sec = bridge_name(s.vni), s.port_security
        mine: list[LanPort] = []
        if sec is not None:
            mine = [LanPort(p, br, sec.max_macs, sec.learn_rate, sec.learn_burst) for p in s.ports]
            mine += [LanPort(w.name, br, min(WORKLOAD_MAX_MACS, sec.max_macs), sec.learn_rate, sec.learn_burst,
                             w.owner) for w in on_bridge.get(br, ())]
        ports += mine
        overlays.append(Overlay(vxlan_name(s.vni), br, str(s.gateway), anycast_mac(s.vni),
                                tuple(sorted(p.name for p in mine)), closed=sec is not None))
    return PortGuard(tuple(sorted(ports, key=lambda p: p.name)), tuple(overlays))


def set_name(port: str) -> str:
    return f"macs.{port}"


def counter_name(port: str, reason: str) -> str:
    return f"{port}.{reason}"


def _lan_chain(port: str) -> str:
    return f"port.{port}"


def _overlay_chain(port: str) -> str:
    return f"overlay.{port}"


def _match(left: dict, right: object, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


ETHER_SADDR = {"payload": {"protocol": "ether", "field": "saddr"}}
ARP_SENDER_IP = {"payload": {"protocol": "arp", "field": "saddr ip"}}
ARP_SENDER_MAC = {"payload": {"protocol": "arp", "field": "saddr ether"}}
ARP_OP = {"payload": {"protocol": "arp", "field": "operation"}}
IN_BRIDGE = {"meta": {"key": "ibrname"}}  # the bridge the input port belongs to


@dataclass(frozen=True)
class Carry:
    """What a re-apply keeps of the table it replaces: learned MACs (most recent first) and counts."""

    macs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # port -> MACs
    counters: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # counter name -> packets, bytes


def render(g: PortGuard, carry: Carry | None = None, by_bridge: bool = True) -> str:
    """One transaction that replaces table bridge nsg_port whole (add, delete, add: no error whether
    or not it existed). ``carry``: the MACs each port had learned (up to its new max_macs, the most
    recently seen first) and the counters go into the new table, so a re-apply neither makes every
    host learn again through the rate limit nor resets what was counted. ``by_bridge``: the kernel
    matches meta ibrname (probe_document), so the guarded subnets' bridges drop their stray ports."""
    carry = carry or Carry()
    head = {"family": FAMILY, "table": TABLE}
    cmds: list[dict] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"add": {"table": {"family": FAMILY, "name": TABLE}}}]

    def counter(port: str, reason: str) -> None:
        name = counter_name(port, reason)
        packets, nbytes = carry.counters.get(name, (0, 0))
        cmds.append({"add": {"counter": {**head, "name": name, "packets": packets, "bytes": nbytes}}})

    for p in g.ports:
        s = {**head, "name": set_name(p.name), "type": "ether_addr", "flags": ["timeout"],
             "timeout": g.ageing_s, "size": p.max_macs}
        kept = carry.macs.get(p.name, ())[: p.max_macs]
        if kept:
            s["elem"] = list(kept)
        cmds.append({"add": {"set": s}})
        for reason in LAN_REASONS:
            counter(p.name, reason)
    for o in g.overlays:
        for reason in OVERLAY_REASONS:
            counter(o.name, reason)
    closed = [o.bridge for o in g.overlays if o.closed] if by_bridge else []
    for br in closed:
        counter(br, STRAY)

    for base in ("prerouting", "input"):
        cmds.append({"add": {"chain": {**head, "name": base, "type": "filter", "hook": base, "prio": PRIORITY,
                                       "policy": "accept"}}})
    chains = [(p.name, _lan_chain(p.name)) for p in g.ports] + [(o.name, _overlay_chain(o.name)) for o in g.overlays]
    for _, chain in chains:
        cmds.append({"add": {"chain": {**head, "name": chain}}})

    def rule(chain: str, *expr: dict) -> None:
        cmds.append({"add": {"rule": {**head, "chain": chain, "expr": list(expr)}}})

    if chains:
        # goto: a named port's chain ends its frame's way through this base chain (a LAN port's with a
        # verdict, an overlay's with the policy): it never reaches the stray rules below.
        vmap = {"vmap": {"key": {"meta": {"key": "iifname"}},
                         "data": {"set": [[port, {"goto": {"target": chain}}] for port, chain in sorted(chains)]}}}
        daddr = _match({"&": [{"payload": {"protocol": "ether", "field": "daddr"}}, LINK_LOCAL[1]]}, LINK_LOCAL[0])
        rule("prerouting", vmap)
        for br in closed:
            rule("prerouting", _match(IN_BRIDGE, br), {"counter": counter_name(br, STRAY)}, {"drop": None})
        rule("input", daddr, vmap)
        for br in closed:
            rule("input", daddr, _match(IN_BRIDGE, br), {"counter": counter_name(br, STRAY)}, {"drop": None})

    for p in g.ports:
        chain, macs = _lan_chain(p.name), "@" + set_name(p.name)
        rule(chain, _match(ETHER_SADDR, macs), {"set": {"op": "update", "elem": ETHER_SADDR, "set": macs}},
             {"accept": None})
        rule(chain, {"limit": {"rate": p.learn_rate, "per": "second", "burst": p.learn_burst, "inv": True}},
             {"counter": counter_name(p.name, RATE)}, {"drop": None})
        rule(chain, {"set": {"op": "add", "elem": ETHER_SADDR, "set": macs}}, {"accept": None})
        rule(chain, {"counter": counter_name(p.name, FULL)}, {"drop": None})

    for o in g.overlays:
        chain, arp = _overlay_chain(o.name), counter_name(o.name, GATEWAY_ARP)
        # RFC 826: the sender's (IP, MAC) is what a receiver caches. The box answers for its gateway
        # address on the bridge itself, so no reply for it has business coming from the overlay; a
        # remote gateway's request for a host (non-EVPN) carries the same anycast MAC and may pass.
        rule(chain, _match(ARP_SENDER_IP, o.gateway), _match(ARP_OP, "reply"), {"counter": arp}, {"drop": None})
        rule(chain, _match(ARP_SENDER_IP, o.gateway), _match(ARP_SENDER_MAC, o.gateway_mac, "!="),
             {"counter": arp}, {"drop": None})
        for lan in o.local_ports:
            rule(chain, _match(ETHER_SADDR, "@" + set_name(lan)), {"counter": counter_name(o.name, SPOOF)},
                 {"drop": None})
    return json.dumps({"nftables": cmds})


def probe_document() -> str:
    """A table with one meta ibrname match, for `nft -c` (a dry run: the kernel checks every expression,
    then aborts the transaction): it fails where nft_meta_bridge is not built."""
    head = {"family": FAMILY, "table": TABLE + "_probe"}
    return json.dumps({"nftables": [
        {"add": {"table": {"family": FAMILY, "name": head["table"]}}},
        {"add": {"chain": {**head, "name": "probe"}}},
        {"add": {"rule": {**head, "chain": "probe", "expr": [_match(IN_BRIDGE, "br-0")]}}}]})


def remove_document() -> str:
    return json.dumps({"nftables": [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                                    {"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})


# --- reading the table back -------------------------------------------------------------------------


class PortGuardReadError(RuntimeError):
    """nft's listing of table bridge nsg_port is not shaped like what we write (a local fault)."""


@dataclass(frozen=True)
class Count:
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class PortReading:
    """One port: for a LAN (or workload) port the MACs it holds now (most recently seen first) and its
    limit; for a VXLAN port no MACs; for a bridge, the frames of its stray ports; drops by reason
    (every reason of its kind is present, zero when none)."""

    port: str
    kind: str  # "lan" (LAN and workload ports) | "overlay" | "bridge"
    drops: Mapping[str, Count]
    macs: tuple[str, ...] = ()
    max_macs: int | None = None

    @property
    def learned(self) -> int:
        return len(self.macs)


@dataclass(frozen=True)
class PortGuardReading:
    ports: Mapping[str, PortReading]

    def drops(self, port: str, reason: str) -> int:
        """Packets dropped on ``port`` for ``reason`` (0 for a port or reason not there)."""
        p = self.ports.get(port)
        return p.drops.get(reason, Count()).packets if p is not None else 0

    def carry(self) -> Carry:
        return Carry(macs={n: p.macs for n, p in self.ports.items() if p.kind == "lan"},
                     counters={counter_name(n, r): (c.packets, c.bytes) for n, p in self.ports.items()
                               for r, c in p.drops.items()})

    def as_dict(self) -> dict:
        """For `nsg status --json` and telemetry."""
        out: dict[str, dict] = {}
        for name, p in sorted(self.ports.items()):
            d: dict = {"kind": p.kind, "dropped": {r: {"packets": c.packets, "bytes": c.bytes}
                                                   for r, c in sorted(p.drops.items())}}
            if p.kind == "lan":
                d.update(macs=p.learned, max_macs=p.max_macs)
            out[name] = d
        return out


def _int(obj: dict, key: str, where: str) -> int:
    v = obj.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise PortGuardReadError(f"nft listing: {where}: {key} is {v!r}, not a count")
    return v


def _elements(s: dict) -> list[tuple[str, int]]:
    """(MAC, seconds until it expires) of a set's elements; nft lists them plain or with timeouts."""
    out = []
    for e in s.get("elem", ()):
        if isinstance(e, str):
            out.append((e, 0))
        elif isinstance(e, dict) and isinstance(e.get("elem"), dict) and isinstance(e["elem"].get("val"), str):
            exp = e["elem"].get("expires", 0)
            out.append((e["elem"]["val"], exp if isinstance(exp, int) else 0))
        else:
            raise PortGuardReadError(f"nft listing: set {s.get('name')!r}: element {e!r} is not a MAC")
    return out


def parse(listing: str | dict) -> PortGuardReading:
    """``nft -j list table bridge nsg_port`` -> MACs and drops per port. Objects of other tables and
    names we do not write are ignored; a count that is not a count raises PortGuardReadError."""
    try:
        doc = json.loads(listing) if isinstance(listing, str) else listing
    except json.JSONDecodeError as exc:
        raise PortGuardReadError(f"nft listing is not JSON: {exc}") from None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise PortGuardReadError("nft listing has no 'nftables' list")
    macs: dict[str, tuple[str, ...]] = {}
    sizes: dict[str, int] = {}
    drops: dict[str, dict[str, Count]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        s, c = item.get("set"), item.get("counter")
        if isinstance(s, dict) and s.get("table") == TABLE and str(s.get("name", "")).startswith("macs."):
            port = s["name"].removeprefix("macs.")
            elems = sorted(_elements(s), key=lambda e: (-e[1], e[0]))  # most recently refreshed first
            macs[port] = tuple(m for m, _ in elems)
            sizes[port] = _int(s, "size", f"set {s['name']!r}")
        elif isinstance(c, dict) and c.get("table") == TABLE and isinstance(c.get("name"), str):
            port, _, reason = c["name"].rpartition(".")
            if port and reason in REASONS:
                drops.setdefault(port, {})[reason] = Count(_int(c, "packets", f"counter {c['name']!r}"),
                                                           _int(c, "bytes", f"counter {c['name']!r}"))
    ports = {}
    for port in sorted(set(macs) | set(drops)):
        counted = drops.get(port, {})
        if port in macs or any(r in LAN_REASONS for r in counted):
            kind, reasons = "lan", LAN_REASONS
        elif any(r in BRIDGE_REASONS for r in counted):
            kind, reasons = "bridge", BRIDGE_REASONS
        else:
            kind, reasons = "overlay", OVERLAY_REASONS
        ports[port] = PortReading(port, kind, MappingProxyType({r: counted.get(r, Count()) for r in reasons}),
                                  macs.get(port, ()), sizes.get(port))
    return PortGuardReading(MappingProxyType(ports))

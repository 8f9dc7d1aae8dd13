"""What the kernel gets from EVPN, decided route by route and kept up to date input by input. Pure.

The core (routes.py) tells the view which MACs, IPs, flood lists and prefixes an input touched; the
view decides those again and keeps the FDB entries, neighbour entries and prefix routes as sets.
``fdb()``, ``neighbors()`` and ``routes()`` hand out one frozenset per change: while nothing changes
the same object comes back, so a resync with an unchanged RIB compares objects, not tens of
thousands of entries (nsg/compose.py takes them as they are when ``devices`` says they were made
for its config). A config change rebuilds everything (``rebuild``).

Which remote location a MAC gets (FDB): none while the MAC is ours (learned on our LAN and
announced: origination decides, originate.py); else the best path (rib.py ``path_rank``), or, while
the MAC is frozen by duplicate-MAC detection (mobility.py), the path at the site it is frozen at.
With transport "esp" a VTEP that is not a peer's system IP is held back (``vteps_refused``): frames
to it would cross the WAN in clear.

Which MAC an IP gets (a neighbour entry: ARP suppression, RFC 7432 section 10), among the MAC+IP
paths carrying that IP; a refused path is counted once per reason and shown by ``nsg show evpn``:

  (b) ``own-address``: never an address of this box's own LAN side: a subnet's gateway (its
      network and broadcast addresses), an address the config gives one of its apps or VMs;
  (a) ``local-neighbor``: never against a binding learned on our own LAN (the local table's IPs):
      a route naming another MAC for it is refused while the host's entry lives here;
  (c) ``lower-sequence``: a binding installed is moved to another MAC only by a path with a
      strictly higher MAC Mobility sequence number than the binding's own paths (RFC 7432 15.1: a
      real move is announced one above); paths naming another MAC with an equal or lower one are
      refused, whatever their next hop or sticky flag (a static MAC cannot move, RFC 7432 15.2,
      but an IP is not a MAC). With no binding yet: the highest sequence number, then the lowest
      next hop (and the others are refused). The binding a higher one replaces is not counted
      (a real move; its withdrawal follows).

Prefix routes (type 5) came through the allow-list already (routes.py); here they get their kernel
route via the gateway IP on the subnet's bridge, and never one that covers the overlay's own
addresses, a subnet, or the default (``prefixes_refused``, once per prefix).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from nsg.dataplane.desired import bridge_name, vxlan_name
from nsg.dataplane.types import ZERO_MAC, Fdb, Neigh, Route
from nsg.evpn.mobility import LOCAL, DuplicateMacs
from nsg.evpn.rib import EvpnRib, MacRoute, _vtep_key
from nsg.model import GatewayConfig

Mac = tuple[int, str]  # (vni, mac)
IpKey = tuple[int, str]  # (vni, ip)
PREFIX_METRIC = 50  # routes from EVPN type-5 routes (below the uplinks' default routes' 100+)

OWN_ADDRESS, LOCAL_NEIGHBOR, LOWER_SEQUENCE = "own-address", "local-neighbor", "lower-sequence"
SUPERSEDED = "superseded"  # an older binding a higher sequence number replaced: not installed, not a refusal
IP_COUNTERS = {OWN_ADDRESS: "ip_refused_own_address", LOCAL_NEIGHBOR: "ip_refused_local_neighbor",
               LOWER_SEQUENCE: "ip_refused_lower_sequence"}


def ip_rank(r: MacRoute) -> tuple:
    """Among MAC+IP paths of one IP: the highest sequence number, then the lowest next hop (the
    sticky flag is about the MAC, not the IP: see the module docstring, rule c)."""
    return (-r.seq, _vtep_key(r.vtep), r.rd, r.peer, r.mac)


@dataclass(frozen=True)
class Scope:
    """What the config says the view may produce."""

    subnets: dict  # VNI -> Subnet
    own: dict  # VNI -> frozenset of addresses of our own LAN side in that subnet (rule b)
    tunnels: frozenset[str] | None  # transport "esp": the VTEPs inside tunnels; else None (any)
    devices: frozenset[str]  # the bridges and VXLAN devices entries may be on
    prefixes: dict  # our own configured prefixes: prefix text -> gateway IP text
    protected: tuple[IPv4Network, ...]  # what a received prefix must never cover

    @classmethod
    def of(cls, cfg: GatewayConfig) -> Scope:
        assert cfg.evpn is not None
        subnets = {s.vni: s for s in cfg.subnets}
        by_name = {s.name: s for s in cfg.subnets}
        own: dict[int, set[str]] = {s.vni: {str(s.gateway), str(s.cidr.network_address),
                                            str(s.cidr.broadcast_address)} for s in cfg.subnets}
        for w in (*cfg.apps, *cfg.vms):
            s = by_name.get(w.subnet)
            if s is not None:
                own[s.vni].add(str(w.address))
        protected = [IPv4Network(f"{cfg.system_ip}/32")]
        protected += [IPv4Network(f"{a}/32") for p in cfg.peers for a in (p.system_ip, p.endpoint)]
        protected += [IPv4Network(f"{p.address}/32") for p in cfg.evpn.peers]
        protected += [u.address.network for u in cfg.uplinks if u.address is not None]
        protected += [s.cidr for s in cfg.subnets]
        return cls(subnets, {v: frozenset(a) for v, a in own.items()},
                   frozenset(str(p.system_ip) for p in cfg.peers) if cfg.transport == "esp" else None,
                   frozenset({bridge_name(v) for v in subnets} | {vxlan_name(v) for v in subnets}),
                   {str(ep.prefix): str(ep.via) for ep in cfg.evpn.prefixes}, tuple(protected))


class KernelView:
    """``is_ours(m)``: the MAC is on our LAN and we announce it (no remote entry). ``local_ip(k)``:
    the MAC our LAN has for that IP, or None. ``counters``: the core's, shared."""

    def __init__(self, rib: EvpnRib, dup: DuplicateMacs, is_ours: Callable[[Mac], bool],
                 local_ip: Callable[[IpKey], str | None], counters: dict[str, int]):
        self.rib, self.dup, self.is_ours, self.local_ip, self.counters = rib, dup, is_ours, local_ip, counters
        self.scope: Scope | None = None
        self.mac_at: dict[Mac, str] = {}  # remote MACs: the VTEP chosen (those held back too)
        self.held: set[Mac] = set()  # chosen VTEP outside the tunnels: not installed
        self.binding: dict[IpKey, MacRoute] = {}  # IP -> its winning path (its MAC installed unless ours)
        self.refused: dict[IpKey, dict[MacRoute, str]] = {}  # MAC+IP paths refused, with the reason
        self.refused_prefixes: dict[str, str] = {}  # prefix -> why the kernel does not get it
        self._fdb: set[Fdb] = set()
        self._flood: frozenset[Fdb] = frozenset()
        self._flood_held = 0
        self._neigh: set[Neigh] = set()
        self._routes: frozenset[Route] = frozenset()
        self.version = 0  # bumped by every change of what the kernel should hold
        self._cache: dict[str, tuple[int, frozenset]] = {}
        self._names: dict[int, str] = {}

    @property
    def devices(self) -> frozenset[str]:
        return self.scope.devices if self.scope is not None else frozenset()

    # --- what the kernel gets ---------------------------------------------------------------------

    def fdb(self) -> frozenset[Fdb]:
        return self._cached("fdb", lambda: frozenset(self._fdb | self._flood))

    def neighbors(self) -> frozenset[Neigh]:
        return self._cached("neigh", lambda: frozenset(self._neigh))

    def routes(self) -> frozenset[Route]:
        return self._routes

    def _cached(self, what: str, make: Callable[[], frozenset]) -> frozenset:
        hit = self._cache.get(what)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        value = make()
        self._cache[what] = (self.version, value)
        return value

    # --- updates ----------------------------------------------------------------------------------

    def rebuild(self, cfg: GatewayConfig) -> None:
        """A new config: every decision again (the tunnels, subnets, own addresses may have changed)."""
        self.scope = Scope.of(cfg)
        self.macs(list(self.mac_at.keys() | self.rib.macs.keys()))
        self.ips(list(self.binding.keys() | self.rib.ips.keys() | self.refused.keys()))
        self.flood()
        self.prefixes()

    def macs(self, macs: Iterable[Mac]) -> None:
        for m in macs:
            self._mac(m)
        self.counters["vteps_refused"] = len(self.held) + self._flood_held  # a gauge: held back now

    def ips(self, keys: Iterable[IpKey]) -> None:
        for k in keys:
            self._ip(k)

    def flood(self) -> None:
        """Type-3 routes -> the flood list of each VNI (a few per site: rebuilt whole)."""
        sc = self.scope
        out, held = set(), 0
        for r in self.rib.imets.values():
            if sc is None or r.vni not in sc.subnets:
                continue
            if sc.tunnels is not None and r.vtep not in sc.tunnels:
                held += 1
                continue
            out.add(Fdb(vxlan_name(r.vni), ZERO_MAC, r.vtep))
        self._flood_held = held
        self.counters["vteps_refused"] = len(self.held) + held
        if out != self._flood:
            self._flood = frozenset(out)
            self.version += 1

    def prefixes(self) -> None:
        """Type-5 paths (allowed ones: routes.py) and our own prefixes -> kernel routes via their
        gateway IP on the subnet's bridge (a few: rebuilt whole)."""
        sc = self.scope
        if sc is None:
            return
        wanted = dict(sc.prefixes)
        for prefix, r in self.rib.best_prefixes().items():
            wanted.setdefault(prefix, r.gateway)
        out = set()
        for prefix, gw in wanted.items():
            net = IPv4Network(prefix)
            home = next((s for s in sc.subnets.values() if IPv4Address(gw) in s.cidr), None)
            why = None
            if home is None:
                why = f"gateway IP {gw} is in none of our subnets"
            elif net.prefixlen == 0:
                why = "a default route"
            elif any(net.overlaps(p) for p in sc.protected):
                why = "covers the overlay's own addresses or a subnet"
            if why is not None:
                if prefix not in self.refused_prefixes:
                    self.counters["prefixes_refused"] += 1
                self.refused_prefixes[prefix] = why
                continue
            assert home is not None
            out.add(Route(prefix, bridge_name(home.vni), gw, None, PREFIX_METRIC))
        self.refused_prefixes = {p: w for p, w in self.refused_prefixes.items() if p in wanted}
        if out != self._routes:
            self._routes = frozenset(out)
            self.version += 1

    # --- one MAC, one IP --------------------------------------------------------------------------

    def _choose(self, m: Mac) -> str | None:
        sc = self.scope
        if sc is None or m[0] not in sc.subnets or self.is_ours(m):
            return None
        paths = self.rib.paths(*m)
        if not paths:
            return None
        at = self.dup.frozen_at(m)
        if at is not None and at != LOCAL:
            held = next((p for p in paths if p.vtep == at), None)  # frozen: it stays where it is
            if held is not None:
                return held.vtep
        return paths[0].vtep

    def _mac(self, m: Mac) -> None:
        new = self._choose(m)
        old = self.mac_at.get(m)
        sc = self.scope
        hold = new is not None and sc is not None and sc.tunnels is not None and new not in sc.tunnels
        was_held = m in self.held
        if new == old and hold == was_held:
            return
        vx = self._vx(m[0])
        if old is not None and not was_held:
            self._fdb.discard(Fdb(vx, m[1], old))
            self._fdb.discard(Fdb(vx, m[1], "", master=True))
        if new is None:
            self.mac_at.pop(m, None)
        else:
            self.mac_at[m] = new
        if hold:
            self.held.add(m)
        else:
            self.held.discard(m)
        if new is not None and not hold:
            self._fdb.add(Fdb(vx, m[1], new))  # where the VXLAN device sends it
            self._fdb.add(Fdb(vx, m[1], "", master=True))  # the bridge: toward the VXLAN port
        if (old is not None and not was_held) or (new is not None and not hold):
            self.version += 1

    def _vx(self, vni: int) -> str:
        """The VXLAN device's name, one string for all of its entries."""
        name = self._names.get(vni)
        if name is None:
            name = self._names[vni] = vxlan_name(vni)
        return name

    def _ip(self, k: IpKey) -> None:
        win, refused = self._decide_ip(k)
        before = self.refused.get(k, {})
        for path, why in refused.items():
            if before.get(path) != why and why in IP_COUNTERS:
                self.counters[IP_COUNTERS[why]] += 1
        if refused:
            self.refused[k] = refused
        else:
            self.refused.pop(k, None)
        old = self.binding.get(k)
        if win is None:
            self.binding.pop(k, None)
        else:
            self.binding[k] = win
        installed = win is not None and not self.is_ours((k[0], win.mac))
        entry = Neigh(bridge_name(k[0]), k[1], win.mac) if win is not None and installed else None
        old_entry = Neigh(bridge_name(k[0]), k[1], old.mac) if old is not None else None
        if entry == old_entry and (entry is None or entry in self._neigh):
            return
        changed = False
        if old_entry is not None and old_entry in self._neigh:
            self._neigh.discard(old_entry)
            changed = True
        if entry is not None:
            self._neigh.add(entry)
            changed = True
        if changed:
            self.version += 1

    def _decide_ip(self, k: IpKey) -> tuple[MacRoute | None, dict[MacRoute, str]]:
        """The path the IP is bound by (None: no binding), and the paths refused with why."""
        vni, ip = k
        paths = self.rib.ips.get(k, ())
        sc = self.scope
        subnet = sc.subnets.get(vni) if sc is not None else None
        if not paths or subnet is None or ip.count(".") != 3 or IPv4Address(ip) not in subnet.cidr:
            return None, {}  # not an IPv4 host of one of our subnets: nothing to install, nothing to say
        assert sc is not None
        if ip in sc.own.get(vni, ()):
            return None, dict.fromkeys(paths, OWN_ADDRESS)
        refused: dict[MacRoute, str] = {}
        here = self.local_ip(k)
        cands = []
        for p in paths:
            if here is not None and p.mac != here:
                refused[p] = LOCAL_NEIGHBOR
            else:
                cands.append(p)
        if not cands:
            return None, refused
        best = min(cands, key=ip_rank)
        was = self.binding.get(k)
        if was is not None and best.mac != was.mac:
            keep = [p for p in cands if p.mac == was.mac]
            if keep and best.seq <= max(p.seq for p in keep):
                best = min(keep, key=ip_rank)  # not one above the binding: it stays
        # every path naming another MAC is at most the binding's sequence number: refused (rule c),
        # except the binding that a higher one just replaced (a real move: its withdrawal follows)
        before = self.refused.get(k, {})
        for p in cands:
            if p.mac == best.mac:
                continue
            moved = was is not None and p.mac == was.mac != best.mac
            refused[p] = SUPERSEDED if moved or before.get(p) == SUPERSEDED else LOWER_SEQUENCE
        return best, refused

    # --- for the operator -------------------------------------------------------------------------

    def ip_refusal(self, r: MacRoute) -> str | None:
        if r.ip is None:
            return None
        why = self.refused.get((r.vni, r.ip), {}).get(r)
        return why if why in IP_COUNTERS else None

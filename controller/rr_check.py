"""The route reflector's check of what a client sends, route by route. Sans-IO: no sockets, no clock
(``now`` comes in), no logging; the reflector's Adj-RIBs-In (rr_rib.py) apply the outcome.

Each NLRI of an UPDATE is accepted or refused with a ``Reason``:

- an announcement must be the client's own (``rr_policy.ClientOwnership``): its system IP as next hop,
  PMSI tunnel endpoint and type-3 originating router; its RDs, VNIs and route targets; its exact type-5
  prefixes; a MAC+IP route's IP inside the VNI's subnet and not another site's workload;
- a route whose ORIGINATOR_ID is our router id, or whose CLUSTER_LIST carries our cluster id, has looped
  (RFC 4456 section 8: ignored), with or without a view;
- a client sets neither ORIGINATOR_ID nor CLUSTER_LIST (RFC 4456 section 8: the reflector creates them).
  One that does is refused route and all, not stripped: with another gateway's router id in
  ORIGINATOR_ID, or our cluster id in CLUSTER_LIST, it would make that gateway (or us) drop the route
  as a loop, and no gateway of ours ever sends them, so they only come from a forger;
- MAC mobility (RFC 7432 section 15): static (sticky) MACs are refused (no gateway of ours pins a MAC,
  and a pinned hijack could never be undone); a sequence number more than one above the highest one
  another client holds for that MAC is refused (a real move counts one up), and so is a client raising
  its own number while nobody else holds the MAC (a PE raises it only to take a MAC over); a MAC that
  moves between clients ``flap_moves`` times in ``flap_window`` seconds is frozen where it was before
  the moves began (duplicate MAC detection, 15.1, done once for all at the reflector): the others'
  routes for it are withdrawn and refused until the window has passed; an IP another client binds to
  another MAC is refused while that client holds it (it is that site's host);
- a withdrawal must name a route the client announced (else it is dropped);
- limits: the client's announcements at a token-bucket rate, and at most ``max_routes`` in its
  Adj-RIB-In.

A refused announcement of an NLRI the client had announced before withdraws the old one (RFC 7606
treat-as-withdraw semantics: what we reflect is what the client last said, or nothing). A refused
route, whatever the reason, takes no room: it does not count against ``max_routes`` (else a client's
looped or refused routes would push its real ones over the limit and get its session torn down), and
one refused for what it carries (a loop, ownership, mobility) draws no rate token either; a route
announced again needs no new room, and a withdrawal (or a refusal) earlier in the same UPDATE frees
its route's. Without an ownership (the reflector runs without a view) only the loop rules, the limits
and the Adj-RIB-In consistency apply.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, ip_network

from bgp.attributes import Ipv4Prefix, MpReachNlri, RawNlri
from bgp.codec import Update, UpdateResult
from bgp.constants import Afi, AttrType, Safi
from bgp.evpn_nlri import (
    EvpnRoute,
    InclusiveMulticastRoute,
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    RouteTarget,
    mac_to_bytes,
)
from controller.rr_mobility import Mobility
from controller.rr_policy import ClientOwnership, ReflectorView

MIN_PREFIX_LEN = 8  # tuning: a type-5 prefix shorter than this is a piece of the default route
REFUSED_KEPT = 1024  # tuning: refused NLRI remembered per client (a later withdrawal of one is no news)


class Reason(StrEnum):
    # --- per route (one NLRI of an UPDATE) ---
    FOREIGN_NEXT_HOP = "foreign-next-hop"  # next hop, PMSI tunnel endpoint or type-3 originator not its system IP
    FOREIGN_RD = "foreign-rd"
    FOREIGN_VNI = "foreign-vni"  # a label (VNI) it does not have
    FOREIGN_ROUTE_TARGET = "foreign-route-target"  # a route target other than our AS : one of its VNIs
    FOREIGN_PREFIX = "foreign-prefix"  # a type-5 prefix that is not one of its own
    COVERING_PREFIX = "default-or-covering-prefix"  # ... and covers the default, a subnet or a system IP
    OUTSIDE_SUBNET = "ip-outside-subnet"  # MAC+IP / type-5 gateway IP outside the VNI's subnet
    FOREIGN_HOST = "foreign-host"  # another site's workload address, or the subnet's gateway address
    ORIGINATOR_ID_OURS = "originator-id-ours"  # RFC 4456 section 8: it has looped back to us
    CLUSTER_LIST_LOOP = "cluster-list-loop"  # ... our cluster id already in its CLUSTER_LIST
    ORIGINATOR_ID_SUPPLIED = "originator-id-supplied"
    CLUSTER_LIST_SUPPLIED = "cluster-list-supplied"
    STICKY_MAC = "sticky-mac"
    MOBILITY_SEQUENCE_JUMP = "mobility-sequence-jump"
    MAC_FLAPPING = "mac-flapping"  # frozen at another client (RFC 7432 15.1 duplicate MAC detection)
    IP_IN_USE = "ip-in-use-elsewhere"  # another client binds the IP to another MAC
    ROUTE_TYPE_NOT_ALLOWED = "route-type-not-allowed"  # EVPN types 1/4/unknown, or not L2VPN EVPN at all
    MALFORMED = "malformed-update"  # RFC 7606 treat-as-withdraw: its routes are withdrawn
    WITHDRAW_NOT_ANNOUNCED = "withdraw-not-announced"
    RATE_LIMITED = "rate-limited"
    OVER_MAX_ROUTES = "over-max-routes"
    TOO_BIG_TO_REFLECT = "too-big-to-reflect"  # with our ORIGINATOR_ID and CLUSTER_LIST over 4,096 octets
    # --- per session (security events, no NLRI) ---
    NOT_A_CLIENT = "not-a-client"
    HOLD_TIME_REFUSED = "hold-time-refused"
    BAD_BGP_IDENTIFIER = "bad-bgp-identifier"
    MAX_ROUTES_TEARDOWN = "max-routes-teardown"
    RECONNECT_IN_BACKOFF = "reconnect-in-backoff"
    SEND_BUFFER_OVERFLOW = "send-buffer-overflow"


# what depends on the view: re-checked when it changes
OWNERSHIP_REASONS = frozenset({
    Reason.FOREIGN_NEXT_HOP, Reason.FOREIGN_RD, Reason.FOREIGN_VNI, Reason.FOREIGN_ROUTE_TARGET,
    Reason.FOREIGN_PREFIX, Reason.COVERING_PREFIX, Reason.OUTSIDE_SUBNET, Reason.FOREIGN_HOST,
})
LOOP_REASONS = frozenset({Reason.ORIGINATOR_ID_OURS, Reason.CLUSTER_LIST_LOOP})


def route_key(nlri: object) -> bytes:
    """What makes two announcements the same route (RFC 7432 7.2: RD, Ethernet tag, MAC, IP; 7.3: RD,
    Ethernet tag, originating router; RFC 9136 3.1: RD, Ethernet tag, prefix): labels, ESI and gateway
    IP are attributes of the route, so a withdrawal with other labels still names it."""
    if isinstance(nlri, MacIpRoute):
        return (b"\x02" + nlri.rd.encode() + nlri.eth_tag.to_bytes(4, "big") + mac_to_bytes(nlri.mac)
                + (nlri.ip.packed if nlri.ip is not None else b""))
    if isinstance(nlri, InclusiveMulticastRoute):
        return b"\x03" + nlri.rd.encode() + nlri.eth_tag.to_bytes(4, "big") + nlri.originator.packed
    if isinstance(nlri, IpPrefixRoute):
        return (b"\x05" + nlri.rd.encode() + nlri.eth_tag.to_bytes(4, "big") + bytes((nlri.prefix_len,))
                + nlri.prefix.packed)
    if isinstance(nlri, EvpnRoute):
        return b"\x00" + nlri.encode()
    if isinstance(nlri, RawNlri):
        return b"\xfe" + nlri.afi.to_bytes(2, "big") + bytes((nlri.safi,)) + nlri.data
    if isinstance(nlri, Ipv4Prefix):
        return b"\xff" + nlri.encode()
    raise TypeError(f"not an NLRI: {nlri!r}")


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float | None = None
    stamp: float = 0.0

    def take(self, now: float, n: float = 1.0) -> bool:
        if self.tokens is None:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


@dataclass(frozen=True)
class Limits:
    """The reflector's tuning (ours, not an RFC's), with why each default is what it is."""

    # A gateway announces a type-3 per VNI, a type-5 per prefix (at most 256) and a type-2 per LAN MAC
    # and per MAC+IP; port security admits 256 MACs per LAN port. 10,000 covers a large branch with
    # headroom; at about 0.9 KB a held route that is about 9 MB per client.
    max_routes: int = 10_000  # per client, unless its ownership says otherwise
    warn_fraction: float = 0.8  # log (once per crossing) when a client's table reaches this share
    # MACs age out while new ones come: a short overshoot is tolerated; a flood is cut 1,000 routes
    # (10 %) beyond the limit, within seconds (RFC 4486 Cease, Maximum Number of Prefixes Reached)
    over_grace: float = 30.0  # seconds a client may stay over its limit before its session goes
    over_excess: int = 1_000  # ... or this many routes refused beyond it, whichever comes first
    # refused reconnects after that teardown; a gateway retries every 30 s at most, so it is back within
    # about 2.5 minutes instead of flapping in a tight loop (common maximum-prefix restart timers: >= 1 min)
    backoff: float = 120.0
    # a session start re-announces a whole table at once: the burst holds two; 500 a second sustained
    # is far above what a LAN makes (port security learns 20 new MACs a second per port) and bounds what
    # one client takes of the reflector's CPU (about 0.3 ms an UPDATE)
    rate: float = 500.0
    burst: int | None = None  # None: twice max_routes
    # RFC 7432 15.1's defaults (N = 5 moves in M = 180 s): a host really moving between branches does
    # so once; a MAC that moves more often flaps (a loop, or a client outbidding the owner)
    flap_moves: int = 5
    flap_window: float = 180.0  # also how long a flapping MAC stays frozen
    # RFC 4271 4.2's smallest non-zero hold time; 0 (no hold timer) is refused: a client that died
    # silently would keep its routes forever
    min_hold_time: int = 3
    catch_up_chunk: int = 256  # routes sent to a newcomer between yields to the event loop (~30 KB)
    max_send_buffer: int = 32 << 20  # octets queued toward a client that does not read: then it goes

    def bucket(self, max_routes: int) -> TokenBucket:
        return TokenBucket(self.rate, float(self.burst if self.burst is not None else 2 * max_routes))



@dataclass
class ClientState:
    """What the check reads of one client (and the buckets it draws from)."""

    address: str
    ownership: ClientOwnership | None  # None: the reflector has no view; routes are not checked
    max_routes: int
    rate: TokenBucket
    routes: dict[bytes, Update] = field(default_factory=dict)  # Adj-RIB-In: key -> one-NLRI update
    # recently refused: key -> (reason, the one-NLRI update as the client sent it, for a view change)
    refused: OrderedDict[bytes, tuple[Reason, Update | None]] = field(default_factory=OrderedDict)

    def remember_refused(self, key: bytes, reason: Reason, update: Update | None) -> None:
        self.refused[key] = (reason, update)
        self.refused.move_to_end(key)
        while len(self.refused) > REFUSED_KEPT:
            self.refused.popitem(last=False)


@dataclass(frozen=True)
class Rules:
    """The view, indexed for the checks."""

    view: ReflectorView
    host_owner: dict[IPv4Address, IPv4Address]
    protected: tuple[IPv4Network, ...]  # what no foreign prefix may cover: system IPs, subnets
    owned_prefixes: frozenset[IPv4Network]  # every client's type-5 prefixes

    @classmethod
    def of(cls, view: ReflectorView) -> Rules:
        hosts = {h: sip for sip, own in view.clients.items() for h in own.hosts}
        protected = [IPv4Network(f"{sip}/32") for sip in view.clients]
        protected += [s.cidr for s in view.subnets.values()]
        owned = frozenset(p for own in view.clients.values() for p in own.prefixes)
        return cls(view, hosts, tuple(protected), owned)


@dataclass
class Outcome:
    """What to do with one UPDATE: store and reflect ``accepted`` (with ``update``'s attributes),
    withdraw ``withdrawn`` (keys the client had announced), and count ``refused``."""

    update: Update | None = None
    accepted: list[tuple[bytes, EvpnRoute]] = field(default_factory=list)
    withdrawn: list[bytes] = field(default_factory=list)
    refused: list[tuple[Reason, bytes, object]] = field(default_factory=list)
    forgotten: list[bytes] = field(default_factory=list)  # withdrawals of routes we had refused
    frozen: list[tuple[int, str]] = field(default_factory=list)  # MACs (VNI, MAC) that started to flap

    def counts(self) -> dict[Reason, int]:
        out: dict[Reason, int] = {}
        for reason, _, _ in self.refused:
            out[reason] = out.get(reason, 0) + 1
        return out


def _mobility_of(upd: Update) -> tuple[int, bool]:
    ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
    mob = [c for c in getattr(ext, "communities", ()) if isinstance(c, MacMobility)]
    return max((c.sequence for c in mob), default=0), any(c.sticky for c in mob)


def loop_reason(upd: Update, router_id: IPv4Address | None, cluster_id: IPv4Address | None) -> Reason | None:
    """RFC 4456 section 8: a route with our router id as ORIGINATOR_ID, or our cluster id in its
    CLUSTER_LIST, came back to us (through another reflector, or a client that reflects) and is ignored."""
    orig = upd.get(AttrType.ORIGINATOR_ID)
    if router_id is not None and orig is not None and orig.router_id == router_id:
        return Reason.ORIGINATOR_ID_OURS
    cl = upd.get(AttrType.CLUSTER_LIST)
    if cluster_id is not None and cl is not None and cluster_id in cl.cluster_ids:
        return Reason.CLUSTER_LIST_LOOP
    return None


def supplied_reason(upd: Update) -> Reason | None:
    """RFC 4456 section 8: ORIGINATOR_ID and CLUSTER_LIST are the reflector's to create."""
    if upd.get(AttrType.ORIGINATOR_ID) is not None:
        return Reason.ORIGINATOR_ID_SUPPLIED
    if upd.get(AttrType.CLUSTER_LIST) is not None:
        return Reason.CLUSTER_LIST_SUPPLIED
    return None


def attribute_reason(upd: Update, own: ClientOwnership, rules: Rules) -> Reason | None:
    """What the UPDATE's attributes say about every route it carries."""
    reach = upd.mp_reach
    if reach is None or (reach.afi, reach.safi) != (Afi.L2VPN, Safi.EVPN):
        return Reason.ROUTE_TYPE_NOT_ALLOWED
    if reach.next_hop != own.system_ip:
        return Reason.FOREIGN_NEXT_HOP
    pmsi = upd.get(AttrType.PMSI_TUNNEL)
    if pmsi is not None and pmsi.tunnel.tunnel_id and pmsi.tunnel.vtep != own.system_ip:
        return Reason.FOREIGN_NEXT_HOP  # the flood list entry it would make points elsewhere
    ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
    for c in getattr(ext, "communities", ()):
        if isinstance(c, RouteTarget) and (c.admin != rules.view.asn or c.assigned not in own.vnis):
            return Reason.FOREIGN_ROUTE_TARGET
    return None


def route_reason(nlri: object, upd: Update, own: ClientOwnership, rules: Rules) -> Reason | None:
    """What makes one route (NLRI) not the client's."""
    if not isinstance(nlri, MacIpRoute | InclusiveMulticastRoute | IpPrefixRoute):
        return Reason.ROUTE_TYPE_NOT_ALLOWED
    if not own.owns_rd(nlri.rd):
        return Reason.FOREIGN_RD
    subnets = rules.view.subnets
    if isinstance(nlri, MacIpRoute):
        if nlri.label1 not in own.vnis or (nlri.label2 is not None and nlri.label2 not in own.vnis):
            return Reason.FOREIGN_VNI
        subnet = subnets.get(nlri.vni)
        if nlri.ip is not None and subnet is not None and (
                nlri.ip.version != 4 or nlri.ip not in subnet.cidr
                or nlri.ip in (subnet.cidr.network_address, subnet.cidr.broadcast_address)):
            return Reason.OUTSIDE_SUBNET
        if nlri.ip is not None and ((subnet is not None and nlri.ip == subnet.gateway)
                                    or rules.host_owner.get(nlri.ip, own.system_ip) != own.system_ip):
            return Reason.FOREIGN_HOST
        if _mobility_of(upd)[1]:
            return Reason.STICKY_MAC
        return None
    if isinstance(nlri, InclusiveMulticastRoute):
        if nlri.originator != own.system_ip:
            return Reason.FOREIGN_NEXT_HOP
        pmsi = upd.get(AttrType.PMSI_TUNNEL)
        if pmsi is not None and pmsi.tunnel.label not in own.vnis:
            return Reason.FOREIGN_VNI
        return None
    if nlri.label not in own.vnis:
        return Reason.FOREIGN_VNI
    net = ip_network((nlri.prefix, nlri.prefix_len), strict=False)
    if net not in own.prefixes:
        return _prefix_reason(net, rules)
    subnet = subnets.get(nlri.label)
    if subnet is not None and nlri.gateway not in subnet.cidr:
        return Reason.OUTSIDE_SUBNET
    return None


def _prefix_reason(net: object, rules: Rules) -> Reason:
    if not isinstance(net, IPv4Network):
        return Reason.FOREIGN_PREFIX
    if net.prefixlen < MIN_PREFIX_LEN or any(p.subnet_of(net) for p in rules.protected) or any(
            p.subnet_of(net) and p != net for p in rules.owned_prefixes):
        return Reason.COVERING_PREFIX
    return Reason.FOREIGN_PREFIX


def ownership_reason(nlri: object, upd: Update, own: ClientOwnership, rules: Rules) -> Reason | None:
    return attribute_reason(upd, own, rules) or route_reason(nlri, upd, own, rules)


def _mobility(nlri: MacIpRoute, seq: int, client: ClientState, mobility: Mobility,
              now: float) -> tuple[Reason | None, str | None]:
    """(refusal, the client this announcement takes the MAC from, if it does)."""
    frozen = mobility.frozen_at(nlri.vni, nlri.mac, now)
    if frozen is not None and frozen != client.address:
        return Reason.MAC_FLAPPING, None
    best = mobility.best_elsewhere(client.address, nlri.vni, nlri.mac)
    if best is not None and seq > best[0] + 1:
        return Reason.MOBILITY_SEQUENCE_JUMP, None
    mine = mobility.seq_of(client.address, nlri.vni, nlri.mac)
    if best is None and mine is not None and seq > mine:
        return Reason.MOBILITY_SEQUENCE_JUMP, None  # raising its own number with nobody to outbid
    if nlri.ip is not None and mobility.ip_elsewhere(client.address, nlri.vni, str(nlri.ip)) - {nlri.mac}:
        return Reason.IP_IN_USE, None
    if best is not None and (seq > best[0] or (seq == best[0] and not mobility.holds(client.address, nlri.vni,
                                                                                      nlri.mac))):
        return None, best[1]  # it outbids (or ties with) the holder: a move (RFC 7432 15.1)
    return None, None


def check_update(result: UpdateResult, client: ClientState, rules: Rules | None, mobility: Mobility,
                 now: float, *, router_id: IPv4Address | None = None,
                 cluster_id: IPv4Address | None = None) -> Outcome:
    """Classify every route of one received UPDATE (after the codec's RFC 7606 handling). ``router_id``
    and ``cluster_id`` are the reflector's own, for the loop rules."""
    upd = result.update
    out = Outcome(update=upd)
    if upd is None:  # RFC 7606 treat-as-withdraw: whatever the message named is withdrawn
        for nlri in result.withdraw_nlri:
            key = route_key(nlri)
            if key in client.routes and key not in out.withdrawn:
                out.withdrawn.append(key)
            out.refused.append((Reason.MALFORMED, key, nlri))
        return out
    for nlri in (*upd.withdrawn, *upd.nlri):  # IPv4 unicast was not negotiated
        out.refused.append((Reason.ROUTE_TYPE_NOT_ALLOWED, route_key(nlri), nlri))
    reach, unreach = upd.mp_reach, upd.mp_unreach
    announced = [(route_key(n), n) for n in reach.nlri] if reach is not None else []
    again = {k for k, _ in announced}
    for nlri in unreach.nlri if unreach is not None else ():
        key = route_key(nlri)
        if key in again:
            continue  # RFC 4271 section 9: in both fields, it counts as announced
        if key in client.routes:
            if key not in out.withdrawn:
                out.withdrawn.append(key)
        elif key in client.refused:
            out.forgotten.append(key)
        else:
            out.refused.append((Reason.WITHDRAW_NOT_ANNOUNCED, key, nlri))
    if reach is None:
        return out
    own = client.ownership
    common: Reason | None = None
    if (reach.afi, reach.safi) != (Afi.L2VPN, Safi.EVPN):
        common = Reason.ROUTE_TYPE_NOT_ALLOWED
    else:
        common = loop_reason(upd, router_id, cluster_id)
        if common is None and own is not None and rules is not None:
            common = supplied_reason(upd) or attribute_reason(upd, own, rules)
    seq = _mobility_of(upd)[0]
    gone = set(out.withdrawn)
    size = len(client.routes) - len(gone)  # the Adj-RIB-In as it will be: held, minus withdrawn, plus new
    fresh: set[bytes] = set()
    for key, nlri in announced:
        reason = common
        taken_from = None
        if reason is None and own is not None and rules is not None:
            reason = route_reason(nlri, upd, own, rules)
            if reason is None and isinstance(nlri, MacIpRoute):
                reason, taken_from = _mobility(nlri, seq, client, mobility, now)
        new = key not in fresh and (key not in client.routes or key in gone)
        if reason is None and not client.rate.take(now):
            reason = Reason.RATE_LIMITED
        if reason is None and new and size >= client.max_routes:
            reason = Reason.OVER_MAX_ROUTES
        if reason is None and taken_from is not None and isinstance(nlri, MacIpRoute) and mobility.note_move(
                nlri.vni, nlri.mac, client.address, taken_from, now,
                was_holding=mobility.holds(client.address, nlri.vni, nlri.mac)):
            out.frozen.append((nlri.vni, nlri.mac))  # it flaps from now on: frozen where it was
            if mobility.frozen_at(nlri.vni, nlri.mac, now) != client.address:
                reason = Reason.MAC_FLAPPING
        if reason is None:
            out.accepted.append((key, nlri))
            fresh.add(key)
            size += new
            continue
        out.refused.append((reason, key, nlri))
        if key in client.routes and key not in gone:
            out.withdrawn.append(key)  # treat-as-withdraw: the old announcement no longer stands
            gone.add(key)
            size -= key not in fresh  # (announced twice, accepted first: that copy keeps its room)
    return out


def single(upd: Update, nlri: EvpnRoute) -> Update:
    """``upd`` carrying only ``nlri`` (MP_REACH_NLRI narrowed), for the Adj-RIB-In."""
    return Update(attributes=tuple(MpReachNlri(a.afi, a.safi, a.next_hop, (nlri,), a.reserved, flags=a.flags)
                                   if isinstance(a, MpReachNlri) else a for a in upd.attributes))


def nlri_of(upd: Update) -> EvpnRoute:
    assert upd.mp_reach is not None
    return upd.mp_reach.nlri[0]  # type: ignore[return-value]


def sequence_of(upd: Update) -> int:
    return _mobility_of(upd)[0]

"""The route reflector's Adj-RIBs-In: each client's UPDATEs checked route by route (rr_check.py), what
passes stored in the form we reflect it (our ORIGINATOR_ID, our cluster id prepended to CLUSTER_LIST:
RFC 4456) and handed to rr_fanout.py, what does not counted, remembered and reported.

A refused route, whatever the reason (foreign, looped, over a limit, too big to reflect once our two
attributes are added), takes no room here and withdraws the same client's earlier copy of that NLRI
(RFC 7606 treat-as-withdraw semantics): the others hold what the client last said, or nothing.
Besides: a view change checks every client's routes again, an IP refused as in use elsewhere is taken
once freed, and a MAC that flaps between clients stays where it was (RFC 7432 15.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from ipaddress import IPv4Address

from bgp.attributes import ClusterList, MpReachNlri, OriginatorId
from bgp.codec import Update, UpdateResult, decode
from bgp.constants import AttrType, ErrorAction
from bgp.errors import LocalBgpError
from bgp.evpn_nlri import EvpnRoute, MacIpRoute
from controller.rr_check import (
    LOOP_REASONS,
    OWNERSHIP_REASONS,
    Limits,
    Outcome,
    Reason,
    Rules,
    check_update,
    nlri_of,
    ownership_reason,
    sequence_of,
    single,
)
from controller.rr_client import Client, Held
from controller.rr_events import describe
from controller.rr_fanout import Fanout
from controller.rr_limits import LimitGuard, Note
from controller.rr_mobility import Mobility

log = logging.getLogger("controller.rr")

REFUSED = list[tuple[Reason, bytes, object]]  # (reason, route key, NLRI) as in rr_check.Outcome


class Rib:
    def __init__(self, router_id: IPv4Address, clients: dict[str, Client], counters: dict[str, int],
                 limits: Limits, fanout: Fanout, guard: LimitGuard, note: Note) -> None:
        self.router_id = router_id
        self.cluster_id = router_id  # one reflector, one cluster (RFC 4456 section 7)
        self.clients = clients
        self.counters = counters
        self.limits = limits
        self.fanout = fanout
        self.guard = guard
        self.note = note
        self.rules: Rules | None = None  # None: no view, routes are not checked against owners
        self.mobility = Mobility(limits.flap_moves, limits.flap_window)
        self.refused_by_reason: Counter = Counter()
        self._ip_waiting: dict[tuple[int, str], set[str]] = {}  # (VNI, IP) -> clients refused it (IP in use)

    def update(self, client: Client, result: UpdateResult) -> None:
        """One UPDATE from ``client`` (after the codec's RFC 7606 handling)."""
        upd = result.update
        if client.closing:
            return
        if upd is not None and upd.mp_reach is None and upd.mp_unreach is not None and not upd.mp_unreach.nlri \
                and not upd.nlri and not upd.withdrawn:
            return  # the client's End-of-RIB: a marker of its session, not news for the others
        now = asyncio.get_running_loop().time()
        out = check_update(result, client.state, self.rules, self.mobility, now, router_id=self.router_id,
                           cluster_id=self.cluster_id)
        for key in out.forgotten:
            client.state.refused.pop(key, None)
        gone = []
        for key in out.withdrawn:
            old = client.routes.pop(key, None)
            if old is not None:
                self._unindex(client, key, old.nlri)
                gone.append(old)
        if gone:
            self.fanout.reflect_withdraw(client, gone)
            client.counters["withdrawn"] += len(gone)
        if out.accepted and out.update is not None:
            self.take(client, out.update, out.accepted)
        if out.refused:
            self._refused(client, out, now)
        for vni, mac in out.frozen:
            self._freeze(vni, mac, now)
        self.guard.watch_size(client)

    def take(self, client: Client, upd: Update, accepted: list[tuple[bytes, EvpnRoute]]) -> None:
        """Store accepted routes (in the form we reflect them) and reflect them. One that our two
        attributes make too big for a message is refused here, and its earlier copy withdrawn."""
        cl = upd.get(AttrType.CLUSTER_LIST)  # only without a view, and never with our cluster id (rr_check)
        orig = upd.get(AttrType.ORIGINATOR_ID)
        originator = orig.router_id if orig is not None else IPv4Address(client.router_id or client.address)
        attrs = [a for a in upd.propagated().attributes if a.type_code not in (AttrType.ORIGINATOR_ID,
                                                                               AttrType.CLUSTER_LIST)]
        attrs += [OriginatorId(originator), ClusterList((self.cluster_id, *(cl.cluster_ids if cl else ())))]
        out = Update(attributes=tuple(attrs))
        seq = sequence_of(upd)
        held, gone, too_big = [], [], []
        for key, nlri in accepted:
            old = client.routes.pop(key, None)
            if old is not None:
                self._unindex(client, key, old.nlri)
            try:
                h = Held(single(out, nlri).encode(), nlri, nlri.encode(), originator)
            except LocalBgpError:  # our two attributes made it too big for one message
                self.counters["too_big_dropped"] += 1
                too_big.append((Reason.TOO_BIG_TO_REFLECT, key, nlri))
                client.state.remember_refused(key, Reason.TOO_BIG_TO_REFLECT, None)
                if old is not None:
                    gone.append(old)  # treat-as-withdraw: the earlier copy no longer stands
                continue
            client.routes[key] = h
            held.append(h)
            if isinstance(nlri, MacIpRoute):
                self.mobility.add(client.address, key, nlri, seq)
        if gone:
            self.fanout.reflect_withdraw(client, gone)
            client.counters["withdrawn"] += len(gone)
        if too_big:
            self._tally(client, too_big)
        client.counters["accepted"] += len(held)
        if len(held) == 1:
            self.fanout.fan_out(client, held[0].data, originator)
        elif held:
            self.fanout.reflect(client, out, [h.nlri for h in held], originator)

    def _refused(self, client: Client, out: Outcome, now: float) -> None:
        over = 0
        for reason, key, nlri in out.refused:
            if (reason in OWNERSHIP_REASONS or reason is Reason.IP_IN_USE) and out.update is not None \
                    and isinstance(out.update.mp_reach, MpReachNlri):
                client.state.remember_refused(key, reason, single(out.update, nlri))  # type: ignore[arg-type]
                if reason is Reason.IP_IN_USE:
                    assert isinstance(nlri, MacIpRoute)
                    self._ip_waiting.setdefault((nlri.vni, str(nlri.ip)), set()).add(client.address)
            elif reason not in (Reason.WITHDRAW_NOT_ANNOUNCED, Reason.MALFORMED):
                client.state.remember_refused(key, reason, None)
            over += reason is Reason.OVER_MAX_ROUTES
            self.counters["loops_dropped"] += reason in LOOP_REASONS
        self._tally(client, out.refused)
        if over:
            self.guard.over(client, over, now)

    def _tally(self, client: Client, refused: REFUSED) -> None:
        """Count refusals per client and reason, and note one security event per reason."""
        counts = Counter(reason for reason, _, _ in refused)
        for reason, n in counts.items():
            client.counters[reason.value] += n
            self.refused_by_reason[reason.value] += n
            example = next(describe(nlri) for r, _, nlri in refused if r is reason)
            self.note(client.address, reason, n, example)

    def recheck(self, client: Client) -> None:
        """The view changed: check the client's routes and its recent refusals against it again."""
        own, rules = client.state.ownership, self.rules
        if own is None or rules is None:
            return
        gone = []
        for key, held in list(client.routes.items()):
            upd = decode(held.data).update  # type: ignore[union-attr]
            assert upd is not None
            reason = ownership_reason(held.nlri, upd, own, rules)
            if reason is not None:
                del client.routes[key]
                self._unindex(client, key, held.nlri)
                client.state.remember_refused(key, reason, upd)
                client.counters[reason.value] += 1
                gone.append(held)
        if gone:
            log.warning("BGP client %s: %d routes withdrawn, no longer its own", client.address, len(gone))
            self.fanout.reflect_withdraw(client, gone)
        for key, (reason, refused) in list(client.state.refused.items()):
            if reason not in OWNERSHIP_REASONS or refused is None or len(client.routes) >= client.state.max_routes:
                continue
            if ownership_reason(nlri_of(refused), refused, own, rules) is None:
                del client.state.refused[key]
                stripped = Update(attributes=tuple(a for a in refused.attributes if a.type_code not in (
                    AttrType.ORIGINATOR_ID, AttrType.CLUSTER_LIST)))
                self.take(client, stripped, [(key, nlri_of(refused))])
        self.guard.watch_size(client)

    def drop(self, client: Client) -> None:
        """The client's session went: its routes go from the others too."""
        gone = list(client.routes.items())
        client.routes.clear()
        for key, held in gone:
            self._unindex(client, key, held.nlri)
        self.fanout.reflect_withdraw(client, [held for _, held in gone])

    def _unindex(self, client: Client, key: bytes, nlri: EvpnRoute) -> None:
        if isinstance(nlri, MacIpRoute):
            self.mobility.remove(client.address, key, nlri)
            if nlri.ip is not None and (nlri.vni, str(nlri.ip)) in self._ip_waiting:
                asyncio.get_running_loop().call_soon(self._release_ip, nlri.vni, str(nlri.ip))

    def _release_ip(self, vni: int, ip: str) -> None:
        """An IP refused to some clients (another one held it) is free now: their bindings of it, as
        they announced them, are taken (checked again) — a host that got the address of one gone."""
        waiting = self._ip_waiting.get((vni, ip), set())
        for address in sorted(waiting):
            client = self.clients.get(address)
            if client is None or self.mobility.ip_elsewhere(address, vni, ip):
                continue
            waiting.discard(address)
            for key, (reason, upd) in list(client.state.refused.items()):
                if reason is Reason.IP_IN_USE and upd is not None and str(getattr(nlri_of(upd), "ip", "")) == ip:
                    del client.state.refused[key]
                    self.update(client, UpdateResult(ErrorAction.NONE, upd))
        if not waiting:
            self._ip_waiting.pop((vni, ip), None)

    def _freeze(self, vni: int, mac: str, now: float) -> None:
        """RFC 7432 15.1: the MAC moved too often; it stays where it was before the moves began, and
        the operator hears of it. Every other client's route for it goes."""
        keep = self.mobility.frozen_at(vni, mac, now)
        movers = sorted({c for _, c in self.mobility.routes_of(vni, mac) if c != keep})
        log.warning("MAC %s in VNI %d flaps between %s: frozen at %s for %.0f s (RFC 7432 15.1)", mac, vni,
                    ", ".join([keep or "?", *movers]), keep, self.limits.flap_window)
        for key, address in self.mobility.routes_of(vni, mac):
            client = self.clients.get(address)
            if address == keep or client is None or key not in client.routes:
                continue
            held = client.routes.pop(key)
            self._unindex(client, key, held.nlri)
            client.state.remember_refused(key, Reason.MAC_FLAPPING, None)
            client.counters[Reason.MAC_FLAPPING.value] += 1
            self.note(address, Reason.MAC_FLAPPING, 1, describe(held.nlri))
            self.fanout.reflect_withdraw(client, [held])

"""All IKE peerings of one gateway, sans-IO: routes datagrams to IKE SAs, creates responders,
hands out stateless cookies under load (RFC 7296 2.6), and re-initiates lost peerings.

Every command leaves tagged with the peer it belongs to: (peer name, command).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from ipsec.ike import events as ev
from ipsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from ipsec.ike.context import ZERO_SPI
from ipsec.ike.errors import RemoteProtocolError
from ipsec.ike.message import Header, Message
from ipsec.ike.payloads import IdPayload, Nonce, Notify
from ipsec.ike.policy import PeerPolicy
from ipsec.ike.sa import IkeSa, State

Tagged = tuple[str, ev.Command]

HALF_OPEN_COOKIE_THRESHOLD = 16  # tuning: above this many responders in IKE_SA_INIT, ask for cookies
RECONNECT_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class Peering:
    policy: PeerPolicy
    endpoint: ev.Address | None  # where to initiate; None: the peer calls us (it sits behind a NAT)
    initiate: bool
    sa: IkeSa | None = None
    failures: int = 0
    last_error: str | None = None


class IkeManager:
    def __init__(self, local: ev.Address, *, rng: Callable[[int], bytes] = os.urandom,
                 cookie_threshold: int = HALF_OPEN_COOKIE_THRESHOLD):
        self.local = local
        self.rng = rng
        self.peers: dict[str, Peering] = {}
        self.by_spi: dict[bytes, str] = {}  # our IKE SPI -> peer name
        self.half_open: dict[bytes, IkeSa] = {}  # responders before IKE_AUTH, by our SPI
        self.half_open_by_peer: dict[tuple[bytes, str], IkeSa] = {}  # by (initiator SPI, address)
        self.cookie_threshold = cookie_threshold
        self._secret = rng(32)
        self.counters = {"no_peer": 0, "malformed": 0, "cookies_sent": 0, "cookies_bad": 0, "unknown_spi": 0}

    # --- configuration ---------------------------------------------------------------

    def set_peer(self, policy: PeerPolicy, endpoint: ev.Address | None, initiate: bool) -> list[Tagged]:
        old = self.peers.get(policy.name)
        if old is not None and old.policy == policy and old.endpoint == endpoint and old.initiate == initiate:
            return []
        out: list[Tagged] = []
        if old is not None and old.sa is not None:
            out += self._run(policy.name, old.sa.close("peer configuration changed"))
        self.peers[policy.name] = Peering(policy, endpoint, initiate)
        if initiate and endpoint is not None:
            out.append((policy.name, ev.SetTimer("reconnect", 0.0)))
        return out

    def remove_peer(self, name: str) -> list[Tagged]:
        p = self.peers.pop(name, None)
        if p is None or p.sa is None:
            return []
        return self._run(name, p.sa.close("peer removed"))

    # --- events ------------------------------------------------------------------------

    def datagram(self, data: bytes, src: ev.Address, local_port: int) -> list[Tagged]:
        try:
            h = Header.decode(data)
        except RemoteProtocolError:
            self.counters["malformed"] += 1
            return []
        # Our SPI is the responder's if the sender is the original initiator (3.1).
        ours = h.spi_r if h.flags & HeaderFlag.INITIATOR else h.spi_i
        name = self.by_spi.get(ours)
        if name is not None and name in self.peers and self.peers[name].sa is not None:
            sa = self.peers[name].sa
            return self._run(name, sa.receive(data, src, local_port))
        if ours in self.half_open:
            sa = self.half_open[ours]
            cmds = sa.receive(data, src, local_port)  # first: IKE_AUTH may rebind it to another peering
            return self._run(sa.policy.name, cmds, half_open=sa)
        if h.exchange == ExchangeType.IKE_SA_INIT and not h.flags & HeaderFlag.RESPONSE and h.spi_r == ZERO_SPI:
            again = self.half_open_by_peer.get((h.spi_i, src[0]))
            if again is not None:  # a retransmitted IKE_SA_INIT: the same responder answers from its cache
                return self._run(again.policy.name, again.receive(data, src, local_port), half_open=again)
            return self._new_responder(data, h, src, local_port)
        self.counters["unknown_spi"] += 1
        return []

    def timer(self, name: str, timer: str) -> list[Tagged]:
        p = self.peers.get(name)
        if p is None:
            return []
        if timer == "reconnect":
            if p.sa is None or p.sa.state is State.CLOSED:
                assert p.endpoint is not None
                p.sa = IkeSa(p.policy, self.local, p.endpoint, initiator=True, rng=self.rng)
                self.by_spi[p.sa.ctx.local_spi] = name
                return self._run(name, p.sa.initiate())
            return []
        if p.sa is None:
            return []
        return self._run(name, p.sa.timer(timer))

    def rekey_child(self, name: str) -> list[Tagged]:
        p = self.peers.get(name)
        return self._run(name, p.sa.rekey_child()) if p and p.sa else []

    def rekey_ike(self, name: str) -> list[Tagged]:
        p = self.peers.get(name)
        return self._run(name, p.sa.rekey_ike()) if p and p.sa else []

    def close_all(self) -> list[Tagged]:
        out: list[Tagged] = []
        for name, p in self.peers.items():
            if p.sa is not None:
                out += self._run(name, p.sa.close("shutting down"))
        return out

    # --- internals -------------------------------------------------------------------

    def _policy_for(self, src: ev.Address) -> PeerPolicy | None:
        """A responder's peer is found by the address it comes from (its public, NATed address)."""
        for p in self.peers.values():
            if p.endpoint is not None and p.endpoint[0] == src[0]:
                return p.policy
        passive = [p for p in self.peers.values() if p.endpoint is None]
        if len(passive) == 1:
            return passive[0].policy
        return next((p.policy for p in passive if p.policy.remote_id is not None), None)

    def _policy_by_identity(self, peer_id: IdPayload) -> PeerPolicy | None:
        return next((p.policy for p in self.peers.values()
                     if p.policy.remote_id is not None and p.policy.remote_id.matches(peer_id)), None)

    def _cookie(self, ni: bytes, src: ev.Address, spi_i: bytes) -> bytes:
        # 2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)
        mac = hmac.new(self._secret, ni + src[0].encode() + spi_i, hashlib.sha256).digest()
        return b"\x01" + mac

    def _new_responder(self, data: bytes, h: Header, src: ev.Address, local_port: int) -> list[Tagged]:
        policy = self._policy_for(src)
        if policy is None:
            self.counters["no_peer"] += 1
            return []
        if len(self.half_open) >= self.cookie_threshold:
            try:
                msg = Message.decode(data)
            except RemoteProtocolError:
                self.counters["malformed"] += 1
                return []
            nonce = msg.get(Nonce)
            if nonce is None:
                return []
            want = self._cookie(nonce.data, src, h.spi_i)
            got = msg.notify(NotifyType.COOKIE)
            if got is None or not hmac.compare_digest(got.data, want):
                if got is not None:
                    self.counters["cookies_bad"] += 1
                self.counters["cookies_sent"] += 1
                reply = Message(h.spi_i, ZERO_SPI, ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0,
                                (Notify(NotifyType.COOKIE, want),))
                return [(policy.name, ev.Send(reply.encode(), src, local_port))]
        sa = IkeSa(policy, self.local, src, initiator=False, peer_spi=h.spi_i, rng=self.rng)
        sa.rebind = self._policy_by_identity
        out = sa.receive(data, src, local_port)
        if sa.state is State.INIT_DONE:
            self.half_open[sa.ctx.local_spi] = sa
            self.half_open_by_peer[(h.spi_i, src[0])] = sa
        return [(policy.name, c) for c in out]

    def _forget_half_open(self, sa: IkeSa) -> None:
        self.half_open.pop(sa.ctx.local_spi, None)
        self.half_open_by_peer = {k: v for k, v in self.half_open_by_peer.items() if v is not sa}

    def _run(self, name: str, cmds: list[ev.Command], half_open: IkeSa | None = None) -> list[Tagged]:
        out: list[Tagged] = []
        p = self.peers.get(name)
        for c in cmds:
            if isinstance(c, ev.Established) and half_open is not None and p is not None:
                # A responder became the peering's IKE SA; one that existed before gives way.
                self._forget_half_open(half_open)
                if p.sa is not None and p.sa is not half_open and p.sa.state is not State.CLOSED:
                    # The peer started over (it restarted, or lost its state): the old SA and its
                    # children are gone on its side, so drop ours without asking (cf. INITIAL_CONTACT).
                    out += [(name, c) for c in p.sa.drop("replaced by a new IKE SA from the peer")]
                p.sa = half_open
                p.failures = 0
                p.last_error = None
                self.by_spi[half_open.ctx.local_spi] = name
            elif isinstance(c, ev.Established) and p is not None:
                p.failures = 0
                p.last_error = None
                if p.sa is not None:
                    self.by_spi[p.sa.ctx.local_spi] = name
            elif isinstance(c, ev.Closed):
                if half_open is not None and half_open.ctx.local_spi in self.half_open:
                    self._forget_half_open(half_open)
                elif p is not None:
                    self.by_spi = {k: v for k, v in self.by_spi.items() if v != name}
                    p.last_error = c.reason if c.fault != "none" else None
                    if p.initiate and p.endpoint is not None and name in self.peers:
                        delay = RECONNECT_BACKOFF[min(p.failures, len(RECONNECT_BACKOFF) - 1)]
                        p.failures += 1
                        out.append((name, ev.SetTimer("reconnect", delay * random.uniform(0.8, 1.2))))
            out.append((name, c))
        return out

    def status(self) -> list[dict]:
        out = []
        for name, p in sorted(self.peers.items()):
            d = {"peer": name, "initiate": p.initiate, "failures": p.failures, "last_error": p.last_error}
            d["ike_sa"] = p.sa.describe() if p.sa is not None else None
            out.append(d)
        return out

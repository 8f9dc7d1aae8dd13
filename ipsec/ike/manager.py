"""All IKE peerings of one gateway, sans-IO: routes datagrams to IKE SAs, creates responders,
hands out stateless cookies under load (RFC 7296 2.6), and re-initiates lost peerings.

Every command leaves tagged with the peer it belongs to: (peer name, command). What arrives
unauthenticated and is refused or dropped before any peering is sure of it leaves as a
``Rejected`` tagged with no peer (""): an IKE_SA_INIT carries nothing but its source address,
which anyone can forge, so naming the peering the address lookup guessed would put a stranger's
traffic under a real peer's name. Rejections are counted by exchange and reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from ipsec.ike import events as ev
from ipsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from ipsec.ike.context import ZERO_SPI
from ipsec.ike.errors import LocalProtocolError, RemoteProtocolError
from ipsec.ike.message import Header, Message
from ipsec.ike.payloads import IdPayload, Nonce, Notify
from ipsec.ike.policy import PeerPolicy
from ipsec.ike.sa import IkeSa, State


@dataclass(frozen=True)
class Rejected:
    """Unauthenticated input refused (``answered``: with an error notify, RFC 7296 2.21.1) or
    dropped without an answer, before it belonged to any peering. ``src`` is the datagram's own
    source address; ``reason`` a notify name (NO_PROPOSAL_CHOSEN) or a drop reason (malformed,
    unknown_spi, no_peer); ``detail`` says what exactly was wrong."""

    exchange: str
    reason: str
    detail: str
    src: ev.Address
    answered: bool


Tagged = tuple[str, ev.Command | Rejected]
NO_PEER = ""  # the tag of what belongs to no peering

HALF_OPEN_COOKIE_THRESHOLD = 16  # tuning: above this many responders in IKE_SA_INIT, ask for cookies
# tuning: how long a responder waits for IKE_AUTH after answering IKE_SA_INIT. The initiator is not
# authenticated yet (it may be a spoofed source), so its state goes soon (2.6, 2.4); 30 s outlasts our
# own initiator's whole IKE_AUTH retransmission (Timers.retransmit, 15.5 s) and is strongSwan's
# half_open_timeout.
HALF_OPEN_TIMEOUT_S = 30.0
HALF_OPEN_TIMER = "half_open"  # "half_open:<our SPI, hex>", tagged NO_PEER: the manager's own timer
RECONNECT_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


def _same_but_credentials(a: PeerPolicy, b: PeerPolicy) -> bool:
    """Policies that differ at most in our own key/certificate, the trust anchors and the revocation
    list: nothing an established SA agreed on."""
    return replace(a, key=b.key, cert=b.cert, cas=b.cas, revoked=b.revoked) == b


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
                 cookie_threshold: int = HALF_OPEN_COOKIE_THRESHOLD, half_open_timeout: float = HALF_OPEN_TIMEOUT_S):
        self.local = local
        self.rng = rng
        self.peers: dict[str, Peering] = {}
        self.by_spi: dict[bytes, str] = {}  # our IKE SPI -> peer name
        self.half_open: dict[bytes, IkeSa] = {}  # responders before IKE_AUTH, by our SPI
        self.half_open_by_peer: dict[tuple[bytes, str], IkeSa] = {}  # by (initiator SPI, address)
        self.cookie_threshold = cookie_threshold
        self.half_open_timeout = half_open_timeout
        self._secret = rng(32)
        # drops by reason; refusals of unauthenticated requests as "refused.<exchange>.<notify>"
        # (and "half_open_expired": responders whose IKE_AUTH never came)
        self.counters = {"no_peer": 0, "malformed": 0, "cookies_sent": 0, "cookies_bad": 0, "unknown_spi": 0,
                         "half_open_expired": 0}

    # --- configuration ---------------------------------------------------------------

    def set_peer(self, policy: PeerPolicy, endpoint: ev.Address | None, initiate: bool) -> list[Tagged]:
        old = self.peers.get(policy.name)
        if old is not None and old.policy == policy and old.endpoint == endpoint and old.initiate == initiate:
            return []
        if old is not None and old.endpoint == endpoint and old.initiate == initiate and \
                _same_but_credentials(old.policy, policy):
            # our certificate renewed, or the revocation list changed: the running SA stays (it was
            # authenticated; new SAs use the new policy), unless the peer's own certificate is revoked now
            old.policy = policy
            out = self._retarget_half_open(policy.name, policy)  # a handshake in progress checks with them too
            sa = old.sa
            if sa is not None and sa.peer_cert_serial is not None and sa.peer_cert_serial in policy.revoked:
                out += self._run(policy.name, sa.close("the peer's certificate was revoked"))
            return out
        out = self._retarget_half_open(policy.name, policy)
        if old is not None and old.sa is not None:
            out += self._end(policy.name, old.sa, "peer configuration changed")
        self.peers[policy.name] = Peering(policy, endpoint, initiate)
        if initiate and endpoint is not None:
            out.append((policy.name, ev.SetTimer("reconnect", 0.0)))
        return out

    def remove_peer(self, name: str) -> list[Tagged]:
        p = self.peers.pop(name, None)
        out = self._retarget_half_open(name, None)
        if p is not None and p.sa is not None:
            out += self._end(name, p.sa, "peer removed")
        return out

    # --- events ------------------------------------------------------------------------

    def datagram(self, data: bytes, src: ev.Address, local_port: int) -> list[Tagged]:
        try:
            h = Header.decode(data)
        except RemoteProtocolError as exc:
            return self._drop("IKE", "malformed", str(exc), src)
        # Our SPI is the responder's if the sender is the original initiator (3.1).
        ours = h.spi_r if h.flags & HeaderFlag.INITIATOR else h.spi_i
        name = self.by_spi.get(ours)
        if name is not None and name in self.peers and self.peers[name].sa is not None:
            sa = self.peers[name].sa
            return self._run(name, sa.receive(data, src, local_port))
        if ours in self.half_open:
            sa = self.half_open[ours]
            cmds = sa.receive(data, src, local_port)  # first: IKE_AUTH may rebind it to another peering
            return self._run(sa.policy.name, cmds, half_open=sa, src=src)
        if h.exchange == ExchangeType.IKE_SA_INIT and not h.flags & HeaderFlag.RESPONSE and h.spi_r == ZERO_SPI:
            again = self.half_open_by_peer.get((h.spi_i, src[0]))
            if again is not None:  # a retransmitted IKE_SA_INIT: the same responder answers from its cache
                return self._run(again.policy.name, again.receive(data, src, local_port), half_open=again)
            return self._new_responder(data, h, src, local_port)
        return self._drop(_exchange_name(h.exchange), "unknown_spi", f"no IKE SA with SPI {ours.hex()}", src)

    def timer(self, name: str, timer: str) -> list[Tagged]:
        if name == NO_PEER:
            return self._own_timer(timer)
        p = self.peers.get(name)
        if p is None:
            return []
        if timer == "reconnect":
            # (a reconnect armed before the peering stopped initiating may still come: it does nothing)
            if (p.sa is None or p.sa.state is State.CLOSED) and p.initiate and p.endpoint is not None:
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

    def _drop(self, exchange: str, reason: str, detail: str, src: ev.Address) -> list[Tagged]:
        self.counters[reason] = self.counters.get(reason, 0) + 1
        return [(NO_PEER, Rejected(exchange, reason, detail, src, answered=False))]

    def _refused(self, exchange: str, sa: IkeSa, closed: ev.Closed, src: ev.Address) -> Tagged:
        reason = sa.refused_with or "error"
        key = f"refused.{exchange}.{reason}"
        self.counters[key] = self.counters.get(key, 0) + 1
        return (NO_PEER, Rejected(exchange, reason, closed.reason, src, answered=True))

    def _new_responder(self, data: bytes, h: Header, src: ev.Address, local_port: int) -> list[Tagged]:
        policy = self._policy_for(src)
        if policy is None:
            return self._drop("IKE_SA_INIT", "no_peer", "no peering takes IKE_SA_INIT from this address", src)
        if len(self.half_open) >= self.cookie_threshold:
            try:
                msg = Message.decode(data)
            except RemoteProtocolError as exc:
                return self._drop("IKE_SA_INIT", "malformed", str(exc), src)
            nonce = msg.get(Nonce)
            if nonce is None:
                return self._drop("IKE_SA_INIT", "malformed", "IKE_SA_INIT without Nonce", src)
            want = self._cookie(nonce.data, src, h.spi_i)
            got = msg.notify(NotifyType.COOKIE)
            if got is None or not hmac.compare_digest(got.data, want):
                if got is not None:
                    self.counters["cookies_bad"] += 1
                self.counters["cookies_sent"] += 1
                reply = Message(h.spi_i, ZERO_SPI, ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0,
                                (Notify(NotifyType.COOKIE, want),))
                return [(NO_PEER, ev.Send(reply.encode(), src, local_port))]
        sa = IkeSa(policy, self.local, src, initiator=False, peer_spi=h.spi_i, rng=self.rng)
        sa.rebind = self._policy_by_identity
        out = sa.receive(data, src, local_port)
        if sa.state is State.INIT_DONE:
            self.half_open[sa.ctx.local_spi] = sa
            self.half_open_by_peer[(h.spi_i, src[0])] = sa
            # it has this long to authenticate; a retransmitted IKE_SA_INIT does not extend it
            expiry = ev.SetTimer(_half_open_timer(sa), self.half_open_timeout)
            return [(policy.name, c) for c in out] + [(NO_PEER, expiry)]
        # Refused (an error answer and Closed) or dropped (nothing): this responder never was
        # the peering's, whatever the address lookup guessed; only its error answer leaves.
        if not out:
            reason = next((k for k in ("malformed", "stale") if sa.counters[k]), "malformed")
            return self._drop("IKE_SA_INIT", reason, "IKE_SA_INIT not taken", src)
        tagged: list[Tagged] = []
        for c in out:
            tagged.append(self._refused("IKE_SA_INIT", sa, c, src) if isinstance(c, ev.Closed) else (NO_PEER, c))
        return tagged

    def _forget_half_open(self, sa: IkeSa) -> list[Tagged]:
        """No longer half-open (authenticated, refused, expired or dropped): its expiry timer goes too."""
        if self.half_open.pop(sa.ctx.local_spi, None) is None:
            return []
        self.half_open_by_peer = {k: v for k, v in self.half_open_by_peer.items() if v is not sa}
        return [(NO_PEER, ev.CancelTimer(_half_open_timer(sa)))]

    def _own_timer(self, timer: str) -> list[Tagged]:
        kind, _, arg = timer.partition(":")
        try:
            spi = bytes.fromhex(arg)
        except ValueError:
            spi = b""
        if kind != HALF_OPEN_TIMER or not spi:
            raise LocalProtocolError(f"unknown manager timer {timer}")
        sa = self.half_open.get(spi)
        if sa is None:
            return []  # it authenticated or was refused meanwhile
        # No IKE_AUTH in time: forget the responder, quietly. The initiator was never authenticated
        # (most likely a spoofed source), so there is nobody to tell and nothing of a peering's ends.
        self._forget_half_open(sa)
        sa.drop(f"no IKE_AUTH within {self.half_open_timeout:g} s of IKE_SA_INIT")  # no children: only its Closed
        self.counters["half_open_expired"] += 1
        return []

    def _retarget_half_open(self, name: str, policy: PeerPolicy | None) -> list[Tagged]:
        """A peering's policy changed (None: it was removed) while responders for it wait for IKE_AUTH:
        those take the new policy, so IKE_AUTH is checked and answered by what is configured now (a
        revoked certificate, a renewed own one). One whose agreed IKE proposal the new policy no longer
        has is forgotten: the initiator gets no answer and starts over."""
        out: list[Tagged] = []
        for sa in [s for s in self.half_open.values() if s.policy.name == name]:
            if policy is not None and sa.agreed_proposal in policy.ike:
                sa.policy = policy
            else:
                out += self._forget_half_open(sa)
                sa.drop("peer configuration changed")
        return out

    def _end(self, name: str, sa: IkeSa, reason: str) -> list[Tagged]:
        """End an IKE SA whose peering is replaced or removed: the peer is told (an INFORMATIONAL Delete,
        1.4.1), but the SA and its children go now. Nothing routes the Delete's answer to it any more,
        so waiting for it would leave the children installed forever."""
        out = self._run(name, sa.close(reason))
        if sa.state is not State.CLOSED:
            out += self._run(name, sa.drop(reason))
        return out

    def _run(self, name: str, cmds: list[ev.Command], half_open: IkeSa | None = None,
             src: ev.Address | None = None) -> list[Tagged]:
        out: list[Tagged] = []
        p = self.peers.get(name)
        for c in cmds:
            if isinstance(c, ev.Established) and half_open is not None and p is not None:
                # A responder became the peering's IKE SA; one that existed before gives way.
                out += self._forget_half_open(half_open)
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
                    # IKE_AUTH failed: the initiator never authenticated, so this is no event of
                    # the peering (the identity it claimed may be anyone's)
                    out += self._forget_half_open(half_open)
                    out.append(self._refused("IKE_AUTH", half_open, c, src or half_open.peer))
                    continue
                self.by_spi = {k: v for k, v in self.by_spi.items() if v != name}
                if p is not None:
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


def _half_open_timer(sa: IkeSa) -> str:
    return f"{HALF_OPEN_TIMER}:{sa.ctx.local_spi.hex()}"


def _exchange_name(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return f"exchange {exchange}"

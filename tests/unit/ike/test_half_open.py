"""Half-open responder IKE SAs (IKE_SA_INIT answered, IKE_AUTH never came: spoofed sources, lost
peers) expire after a bounded time (RFC 7296 2.6: keep little state for unauthenticated peers),
so the cookie demand they trigger ends once the flood is over. Before, they stayed forever and,
after 16 of them, every initiator had to bring a cookie for as long as the box ran."""

from __future__ import annotations

import asyncio
import random

from ipsec.ike import events as ev
from ipsec.ike.constants import NotifyType
from ipsec.ike.driver import IkeDriver
from ipsec.ike.manager import NO_PEER, IkeManager
from ipsec.ike.message import Message
from ipsec.ike.payloads import SA
from ipsec.ike.sa import IkeSa, State
from tests.unit.ike.mgrnet import MgrNet
from tests.unit.ike.simnet import A_ADDR, B_ADDR, psk_policies
from tests.unit.ike.test_hostile_logging import FakeInstaller, FakeNat, spoofed
from tests.unit.ike.test_manager import managers

BOUND = 30.0  # the responder keeps a half-open IKE SA this long (manager.HALF_OPEN_TIMEOUT_S)


def good_init() -> bytes:
    """An acceptable IKE_SA_INIT, as a real initiator with the peering's proposals sends it."""
    pa, _pb = psk_policies()
    send = next(c for c in IkeSa(pa, A_ADDR, B_ADDR, initiator=True).initiate() if isinstance(c, ev.Send))
    return send.data


def flood(net: MgrNet, n: int, seed: int = 20) -> list[ev.Address]:
    rnd = random.Random(seed)
    sources = [spoofed(rnd) for _ in range(n)]
    for src in sources:
        net.inject("b", good_init(), src)
    return sources


def answers_to(net: MgrNet, src: ev.Address) -> list[Message]:
    return [Message.decode(s.data) for s in net.elsewhere if s.peer == src]


def test_spoofed_flood_demands_cookies_until_the_half_open_sas_expire():
    net = MgrNet(*managers())
    b = net.mgr["b"]
    sources = flood(net, 20)
    # 16 responders wait for an IKE_AUTH that never comes; from then on cookies are demanded
    assert len(b.half_open) == 16 and len(b.half_open_by_peer) == 16
    assert b.counters["cookies_sent"] == 4
    assert [m.get(SA) is not None for m in (answers_to(net, s)[0] for s in sources)] == [True] * 16 + [False] * 4
    assert all(answers_to(net, s)[0].notify(NotifyType.COOKIE) is not None for s in sources[16:])
    # still within the bound: still under load
    net.advance(BOUND - 1)
    assert len(b.half_open) == 16 and b.counters.get("half_open_expired", 0) == 0
    net.advance(2)
    assert not b.half_open and not b.half_open_by_peer
    assert b.counters["half_open_expired"] == 16
    # an ordinary IKE_SA_INIT without a cookie is answered normally and the peering comes up
    net.connect()
    first_answer = Message.decode(next(c.data for _t, c in net.seen["b"]
                                       if isinstance(c, ev.Send) and c.peer[0] == A_ADDR[0]))
    assert first_answer.get(SA) is not None and first_answer.notify(NotifyType.COOKIE) is None
    assert b.counters["cookies_sent"] == 4
    assert net.mgr["a"].peers["b"].sa.state is State.ESTABLISHED
    assert b.peers["a"].sa.state is State.ESTABLISHED and not b.half_open


def test_expiry_brings_the_count_below_the_threshold_one_by_one():
    """Expiry is per SA: the older ones go first, and cookies stop as soon as fewer than 16 wait."""
    net = MgrNet(*managers())
    b = net.mgr["b"]
    flood(net, 10, seed=1)
    net.advance(20)
    flood(net, 10, seed=2)  # 6 more responders, 4 cookies
    assert len(b.half_open) == 16 and b.counters["cookies_sent"] == 4
    net.advance(BOUND - 20 + 1)  # the first 10 are over their bound, the last 6 are not
    assert len(b.half_open) == 6 and b.counters["half_open_expired"] == 10
    flood(net, 1, seed=3)
    assert len(b.half_open) == 7 and b.counters["cookies_sent"] == 4


def test_a_half_open_sa_that_completes_ike_auth_in_time_is_unaffected():
    net = MgrNet(*managers())
    a, b = net.mgr["a"], net.mgr["b"]
    net.apply("a", a.timer("b", "reconnect"))
    net.step()  # IKE_SA_INIT reaches b, which answers and waits for IKE_AUTH
    assert len(b.half_open) == 1
    net.advance(BOUND - 1)  # a slow path; a's answer arrives late but in time
    net.deliver()
    sa = b.peers["a"].sa
    assert sa is not None and sa.state is State.ESTABLISHED and a.peers["b"].sa.state is State.ESTABLISHED
    assert not b.half_open and not b.half_open_by_peer
    # its expiry timer was taken back: nothing half-open is left to expire, the SA stays
    assert not [k for k in net.timers["b"] if k[0] == NO_PEER]
    net.advance(BOUND)
    assert b.peers["a"].sa is sa and sa.state is State.ESTABLISHED
    assert b.counters.get("half_open_expired", 0) == 0


def test_ike_auth_after_expiry_finds_no_sa_and_the_initiator_tries_again():
    net = MgrNet(*managers())
    a, b = net.mgr["a"], net.mgr["b"]
    net.apply("a", a.timer("b", "reconnect"))
    net.step()
    held = net.wire  # the IKE_SA_INIT answer is delayed past the bound
    net.wire = []
    net.timers["a"].clear()  # (and a does not retransmit meanwhile)
    net.advance(BOUND + 1)
    assert b.counters["half_open_expired"] == 1 and not b.half_open
    net.wire = held
    net.deliver()
    assert b.counters["unknown_spi"] == 1 and b.peers["a"].sa is None
    # a gets no answer to its IKE_AUTH, gives up, backs off and starts over: that one succeeds
    net.advance(60)
    assert a.peers["b"].sa.state is State.ESTABLISHED and b.peers["a"].sa.state is State.ESTABLISHED


def test_a_retransmitted_ike_sa_init_does_not_extend_the_bound():
    net = MgrNet(*managers())
    b = net.mgr["b"]
    data, src = good_init(), ("203.0.113.9", 500)
    net.inject("b", data, src)
    net.advance(BOUND - 5)
    net.inject("b", data, src)  # the same responder's (no second one, no new bound)
    assert len(b.half_open) == 1
    net.advance(6)
    assert not b.half_open and b.counters["half_open_expired"] == 1
    # afterwards the same request makes a new responder (the old one is forgotten everywhere)
    net.inject("b", data, src)
    assert len(b.half_open) == 1


def test_a_retransmitted_ike_sa_init_is_answered_from_the_cache():
    net = MgrNet(*managers())
    data, src = good_init(), ("203.0.113.9", 500)
    net.inject("b", data, src)
    net.inject("b", data, src)  # RFC 7296 2.1: the lost answer is sent again, byte for byte
    answers = [s.data for s in net.elsewhere if s.peer == src]
    assert len(answers) == 2 and answers[0] == answers[1]


def test_a_failed_ike_auth_takes_its_expiry_timer_back():
    from dataclasses import replace

    pa, pb = psk_policies()
    net = MgrNet(*managers(policies=(pa, replace(pb, psk=b"another secret"))))
    net.connect()
    b = net.mgr["b"]
    assert b.counters["refused.IKE_AUTH.AUTHENTICATION_FAILED"] == 1 and not b.half_open
    assert not [k for k in net.timers["b"] if k[0] == NO_PEER]


def test_the_driver_feeds_the_expiry_back_in():
    """The timer is a command tagged with no peer; the asyncio driver arms it and hands its expiry
    to the manager like any other timer."""
    _a, b = managers()
    b2 = IkeManager(B_ADDR, half_open_timeout=0.05)
    b2.set_peer(b.peers["a"].policy, None, initiate=False)

    async def main():
        driver = IkeDriver(b2, FakeNat(), FakeInstaller(), "127.0.0.1")
        driver.datagram(good_init(), ("198.51.100.7", 500), 500)
        assert len(b2.half_open) == 1
        await asyncio.sleep(0.2)
        driver.close()

    asyncio.run(main())
    assert not b2.half_open and b2.counters["half_open_expired"] == 1

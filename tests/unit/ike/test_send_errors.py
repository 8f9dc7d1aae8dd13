"""A WAN that is down makes sendto fail (ENETUNREACH, EHOSTUNREACH; EPERM when nftables drops
our own output). IKE sends must not raise into the event loop: the failure is counted per errno,
logged a few times, and the exchange's own retransmit timer tries again."""

from __future__ import annotations

import asyncio
import errno
import logging

from ipsec.engine.userspace import UserspaceEngine
from ipsec.ike import events as ev
from ipsec.ike.driver import IkeDriver
from ipsec.ike.policy import Timers
from ipsec.sad import Sad
from tests.unit.ike.simnet import psk_policies
from tests.unit.ike.test_hostile_logging import FakeInstaller
from tests.unit.ike.test_manager import managers, wire


class RaisingSocket:
    def __init__(self, code: int):
        self.code = code
        self.calls = 0

    def sendto(self, data, addr):
        self.calls += 1
        raise OSError(self.code, errno.errorcode[self.code])


def engine_with(code: int) -> tuple[UserspaceEngine, RaisingSocket]:
    eng = UserspaceEngine("esp-test", Sad())  # never opened: only its socket list is used
    sock = RaisingSocket(code)
    eng.sockets = [sock]
    return eng, sock


def test_the_engine_still_reports_the_error_to_its_caller():
    eng, _ = engine_with(errno.ENETUNREACH)
    try:
        eng.send_ike(b"x" * 40, ("198.18.2.2", 4500))
    except OSError as exc:
        assert exc.errno == errno.ENETUNREACH
    else:
        raise AssertionError("send_ike swallowed the error: the driver could not count it")


def test_ike_send_failure_is_counted_and_the_retransmit_timer_retries(caplog):
    pa, pb = psk_policies(timers=Timers(retransmit=(0.05, 0.05, 0.05, 0.05)))
    a, b = managers(policies=(pa, pb))
    wire(a, b, a.timer("b", "reconnect"))  # established in memory; a is on port 4500 now (forced encap)
    eng, sock = engine_with(errno.ENETUNREACH)
    a.timer("b", "dpd")  # the first expiry only notes that the peer was heard from

    async def main():
        driver = IkeDriver(a, eng, FakeInstaller(), "127.0.0.1")
        with caplog.at_level(logging.DEBUG, logger="ipsec"):
            # the WAN is down when the liveness check (an INFORMATIONAL on 4500) goes out
            driver.apply(a.timer("b", "dpd"))  # must not raise
            sent_first = sock.calls
            rtx = [k for k in driver._timers if k[0] == "b" and k[1].startswith("rtx")]
            await asyncio.sleep(0.12)  # the retransmit timer fires and tries again
        counters = dict(driver.counters)
        driver.close()
        return sent_first, rtx, counters

    sent_first, rtx, counters = asyncio.run(main())
    assert sent_first == 1 and rtx, "the retransmit timer after the failed send was not set"
    assert sock.calls >= 3
    assert counters["send_errors.ENETUNREACH"] == sock.calls
    lines = [r for r in caplog.records if r.name.startswith("ipsec") and "send" in r.getMessage()]
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]
    assert "ENETUNREACH" in lines[0].getMessage()


def test_keepalive_failures_are_counted_per_errno(caplog):
    a, _b = managers()
    counts = {}

    async def main():
        for code in (errno.EHOSTUNREACH, errno.EPERM):
            eng, _sock = engine_with(code)
            driver = IkeDriver(a, eng, FakeInstaller(), "127.0.0.1")
            with caplog.at_level(logging.INFO, logger="ipsec"):
                for _ in range(100):
                    driver.apply([("b", ev.SendKeepalive(("198.18.2.2", 4500)))])
            counts.update({k: v for k, v in driver.counters.items() if k.startswith("send_errors")})
            driver.close()

    asyncio.run(main())
    assert counts == {"send_errors.EHOSTUNREACH": 100, "send_errors.EPERM": 100}
    assert len([r for r in caplog.records if r.name.startswith("ipsec")]) <= 6


def test_port_500_errors_are_counted():
    a, _b = managers()

    async def main():
        driver = IkeDriver(a, engine_with(errno.ENETUNREACH)[0], FakeInstaller(), "127.0.0.1")
        from ipsec.ike.driver import _Port500

        _Port500(driver).error_received(OSError(errno.ENETUNREACH, "Network is unreachable"))
        out = dict(driver.counters)
        driver.close()
        return out

    assert asyncio.run(main())["send_errors.ENETUNREACH"] == 1


def test_encap_socket_survives_a_receive_error():
    from ipsec.engine.xfrm_installer import EncapSocket

    class Sock:
        def __init__(self):
            self.n = 0

        def recvfrom(self, _size):
            self.n += 1
            if self.n == 1:
                raise OSError(errno.ECONNREFUSED, "Connection refused")
            if self.n == 2:
                return b"\x00\x00\x00\x00ike", ("198.18.2.2", 4500)
            raise BlockingIOError

    got = []
    enc = EncapSocket.__new__(EncapSocket)  # no real socket, no event loop
    enc.sock = Sock()
    enc.on_ike = lambda data, addr, _i: got.append((data, addr))
    enc.counters = {}
    enc._readable()  # the error must not escape into the event loop
    enc._readable()
    assert got == [(b"ike", ("198.18.2.2", 4500))]
    assert enc.counters == {"recv_errors.ECONNREFUSED": 1}

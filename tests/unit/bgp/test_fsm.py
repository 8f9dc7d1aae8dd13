"""BGP session FSM (RFC 4271 8) driven by hand: the happy path, negotiation, every refusal."""

import pytest

from bgp import fsm
from bgp.constants import CeaseSubcode, ErrorCode, OpenSubcode
from bgp.fsm import PeerOpen, Session, State

CFG = fsm.Config(local_asn=65000, local_id="198.19.255.1", peer_asn=65000, hold_time=9)
GOOD = PeerOpen(4, 65000, 9, "198.19.255.254", frozenset({(25, 70), (1, 1)}), True)


def up(session=None):
    s = session or Session(CFG)
    assert fsm.Connect() in s.start()
    out = s.tcp_up()
    assert fsm.SendOpen(9) in out and fsm.SetTimer("hold", 240.0) in out
    out = s.open(GOOD)
    assert s.state is State.OPEN_CONFIRM and fsm.SendKeepalive() in out
    out = s.keepalive()
    assert s.state is State.ESTABLISHED
    return s, out


def test_happy_path_and_negotiation():
    s, out = up()
    assert fsm.Up(9, frozenset({(25, 70)})) in out
    assert s.afi_safis == {(25, 70)}
    out = s.update("upd")
    assert fsm.Deliver("upd") in out and fsm.SetTimer("hold", 9.0) in out
    assert fsm.SendKeepalive() in s.timer("keepalive")


def test_hold_time_is_the_smaller_and_zero_means_none():
    s = Session(CFG)
    s.start()
    s.tcp_up()
    out = s.open(PeerOpen(4, 65000, 0, "198.19.255.254", frozenset({(25, 70)})))
    assert s.hold_time == 0 and fsm.CancelTimer("hold") in out
    s2 = Session(fsm.Config(65000, "198.19.255.1", 65000, hold_time=90))
    s2.start()
    s2.tcp_up()
    s2.open(GOOD)
    assert s2.hold_time == 9


@pytest.mark.parametrize(("peer", "subcode"), [
    (PeerOpen(3, 65000, 9, "198.19.255.254", frozenset({(25, 70)})), OpenSubcode.UNSUPPORTED_VERSION_NUMBER),
    (PeerOpen(4, 65001, 9, "198.19.255.254", frozenset({(25, 70)})), OpenSubcode.BAD_PEER_AS),
    (PeerOpen(4, 65000, 2, "198.19.255.254", frozenset({(25, 70)})), OpenSubcode.UNACCEPTABLE_HOLD_TIME),
    (PeerOpen(4, 65000, 9, "0.0.0.0", frozenset({(25, 70)})), OpenSubcode.BAD_BGP_IDENTIFIER),
    (PeerOpen(4, 65000, 9, "198.19.255.1", frozenset({(25, 70)})), OpenSubcode.BAD_BGP_IDENTIFIER),
    (PeerOpen(4, 65000, 9, "198.19.255.254", frozenset({(1, 1)})), OpenSubcode.UNSUPPORTED_CAPABILITY),
])
def test_bad_opens_get_the_right_notification(peer, subcode):
    s = Session(CFG)
    s.start()
    s.tcp_up()
    out = s.open(peer)
    assert fsm.SendNotification(ErrorCode.OPEN_MESSAGE, subcode, out[0].data) == out[0]
    assert out[0].code == 2  # RFC 4271 section 4.5: OPEN Message Error
    assert s.state is State.IDLE and any(isinstance(c, fsm.Down) for c in out)


def test_hold_timer_expiry_and_notifications_take_it_down_and_it_restarts():
    s, _ = up()
    out = s.timer("hold")
    assert out[0] == fsm.SendNotification(ErrorCode.HOLD_TIMER_EXPIRED, 0) and s.state is State.IDLE
    assert s.counters["flaps"] == 1
    assert fsm.Connect() in s.timer("connect_retry")  # automatic restart
    s2, _ = up()
    out = s2.notification(6, 2)
    assert not any(isinstance(c, fsm.SendNotification) for c in out) and s2.state is State.IDLE


def test_out_of_order_messages_are_fsm_errors():
    s = Session(CFG)
    s.start()
    s.tcp_up()
    out = s.update("too early")
    assert out[0] == fsm.SendNotification(ErrorCode.FSM, 0) and s.state is State.IDLE


def test_passive_waits_and_stop_sends_cease():
    s = Session(fsm.Config(65000, "198.19.255.254", 65000, passive=True))
    out = s.start()
    assert s.state is State.ACTIVE and fsm.Connect() not in out
    s.tcp_up()
    s.open(PeerOpen(4, 65000, 9, "198.19.255.1", frozenset({(25, 70)})))
    s.keepalive()
    out = s.stop()
    assert out[0] == fsm.SendNotification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN)
    assert s.stop() == []


def test_connection_attempts_back_off_and_reset_once_up():
    def retry(cmds):
        return [c.seconds for c in cmds if isinstance(c, fsm.SetTimer) and c.name == "connect_retry"]

    s = Session(CFG)
    delays = retry(s.start())
    delays += retry(s.tcp_failed())  # in CONNECT: to ACTIVE, wait
    for _ in range(6):
        delays += retry(s.timer("connect_retry"))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    s.tcp_up()
    s.open(GOOD)
    s.keepalive()
    assert s.state is State.ESTABLISHED
    assert retry(s.tcp_down()) == [1.0]  # a fresh outage starts from the first step again

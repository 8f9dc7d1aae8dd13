"""Child SA volume lifetimes at the gateway: soft -> rekey once, hard -> the SA is dropped."""

from ipaddress import IPv4Network

from ipsec.engine.installer import SadInstaller
from ipsec.ike.events import ChildSa
from ipsec.sad import Expiry, Lifetime, Sad, expiry
from nsg.tunnels import Tunnels


def child(cid, in_spi, out_spi):
    return ChildSa(cid, in_spi, out_spi, bytes(20), bytes(20), True, IPv4Network("198.19.255.1/32"),
                   IPv4Network("198.19.255.2/32"), ("198.18.2.2", 4500))


def test_expiry_rules():
    lt = Lifetime(soft_s=10, hard_s=20, soft_bytes=100, hard_bytes=200)
    assert expiry(lt, 5, 50, 1) is Expiry.OK
    assert expiry(lt, 11, 50, 1) is Expiry.SOFT
    assert expiry(lt, 5, 150, 1) is Expiry.SOFT
    assert expiry(lt, 5, 250, 1) is Expiry.HARD
    assert expiry(lt, 25, 0, 0) is Expiry.HARD


def test_soft_rekeys_once_hard_drops():
    t = Tunnels()
    t.installer = SadInstaller(t.sad, lifetime=Lifetime(soft_packets=5, hard_packets=10))
    asked = []
    t.rekey = lambda peer, ike: asked.append((peer, ike)) or True
    t.installer.install("b2", child(1, 0x1001, 0x2001), True)
    out = t.sad.outbound[bytes([198, 19, 255, 2])].sa
    out.counters.packets = 6
    t.check_lifetimes()
    t.check_lifetimes()
    assert asked == [("b2", False)] and t.expired["soft"] == 1
    out.counters.packets = 10
    t.check_lifetimes()
    assert t.expired["hard"] == 1
    assert 0x1001 not in t.sad.inbound and not t.sad.outbound


class Clock:
    """The SAD's clock, moved by hand: no test sleeps, and no codec reads the real time."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_time_limits_count_from_installation_on_the_sads_clock():
    clock = Clock()
    sad = Sad(clock=clock)
    installer = SadInstaller(sad, lifetime=Lifetime(soft_s=60, hard_s=75))
    installer.install("b2", child(1, 0x1001, 0x2001), True)
    assert sad.inbound[0x1001].created == 1000.0 and sad.outbound[bytes([198, 19, 255, 2])].created == 1000.0
    clock.now = 1030.0
    installer.install("b2", child(2, 0x1002, 0x2002), True)  # a rekey: the new pair starts at 1030
    assert sad.expiries() == []
    clock.now = 1060.0
    assert sad.expiries() == [("in", 0x1001, Expiry.SOFT)]  # the replaced outbound SA is gone already
    assert sad.expiries(now=1075.0) == [("in", 0x1001, Expiry.HARD)]  # a caller's own now wins
    clock.now = 1105.0
    assert sad.expiries() == [("in", 0x1001, Expiry.HARD), ("in", 0x1002, Expiry.HARD),
                              ("out", 0x2002, Expiry.HARD)]


def test_soft_age_rekeys_once_hard_age_drops():
    clock = Clock()
    t = Tunnels()
    t.sad = Sad(clock=clock)
    t.installer = SadInstaller(t.sad, lifetime=Lifetime(soft_s=3600, hard_s=4500))
    asked = []
    t.rekey = lambda peer, ike: asked.append((peer, ike)) or True
    t.installer.install("b2", child(1, 0x1001, 0x2001), True)
    clock.now += 3599
    t.check_lifetimes()
    assert asked == []
    clock.now += 1
    t.check_lifetimes()
    t.check_lifetimes()
    assert asked == [("b2", False)] and t.expired == {"soft": 1, "hard": 0}
    clock.now += 900
    t.check_lifetimes()
    assert t.expired["hard"] == 1 and not t.sad.inbound and not t.sad.outbound

"""Child SA volume lifetimes at the gateway: soft -> rekey once, hard -> the SA is dropped."""

from ipaddress import IPv4Network

from ipsec.engine.installer import SadInstaller
from ipsec.ike.events import ChildSa
from ipsec.sad import Expiry, Lifetime, expiry
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

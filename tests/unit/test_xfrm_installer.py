"""The XFRM installer's order of kernel requests (a recording fake; the requests themselves are
checked against the kernel in tests/netns/test_xfrm.py)."""

from ipaddress import IPv4Network

from ipsec.engine import xfrm_codec as x
from ipsec.engine.xfrm_installer import XfrmInstaller
from ipsec.ike.events import ChildSa


class Recorder:
    def __init__(self):
        self.calls = []

    def add_sa(self, sa):
        self.calls.append(("add_sa", sa.src, sa.dst, sa.spi, sa.encap))

    def del_sa(self, dst, spi):
        self.calls.append(("del_sa", dst, spi))

    def add_policy(self, pol):
        self.calls.append(("add_policy", pol.direction))

    def del_policy(self, sel, direction):
        self.calls.append(("del_policy", direction))


def child(cid, in_spi, out_spi):
    return ChildSa(cid, in_spi, out_spi, bytes(20), bytes(20), True, IPv4Network("198.19.255.1/32"),
                   IPv4Network("198.19.255.2/32"), ("198.18.2.2", 31000))


def test_make_before_break_in_the_kernel():
    r = Recorder()
    inst = XfrmInstaller(r, lambda: "198.18.1.2")
    inst.install("b2", child(1, 0x1001, 0x2001), True)
    assert r.calls == [
        ("add_sa", "198.18.2.2", "198.18.1.2", 0x1001, (31000, 4500)),  # inbound first, NAT port kept
        ("add_policy", x.XFRM_POLICY_OUT), ("add_policy", x.XFRM_POLICY_IN), ("add_policy", x.XFRM_POLICY_FWD),
        ("add_sa", "198.18.1.2", "198.18.2.2", 0x2001, (4500, 31000)),
    ]
    r.calls.clear()
    inst.install("b2", child(2, 0x1002, 0x2002), False)  # rekey answered: inbound only, no new policies
    assert r.calls == [("add_sa", "198.18.2.2", "198.18.1.2", 0x1002, (31000, 4500))]
    inst.activate("b2", 2)
    inst.remove("b2", 1, 0x1001, 0x2001)
    assert r.calls[1:] == [("add_sa", "198.18.1.2", "198.18.2.2", 0x2002, (4500, 31000)),
                           ("del_sa", "198.18.1.2", 0x1001), ("del_sa", "198.18.2.2", 0x2001)]
    r.calls.clear()
    inst.remove("b2", 2, 0x1002, 0x2002)
    assert [c[0] for c in r.calls] == ["del_sa", "del_sa", "del_policy", "del_policy", "del_policy"]

"""Run inside a test namespace: exercise the XFRM backend against this kernel, print JSON."""

import json

from ipsec.engine import xfrm_codec as x
from ipsec.engine.xfrm import XfrmBackend, XfrmError, probe


def main() -> None:
    b = XfrmBackend()
    out: dict = {"probe": probe()}
    sel = x.Selector("198.19.255.1/32", "198.19.255.2/32")
    sa = x.XfrmSa("198.18.1.2", "198.18.2.2", 0x1234, bytes(range(20)), 7, sel)
    try:
        b.add_sa(sa)
        out["sa"] = "accepted"
    except XfrmError as e:
        out["sa"] = [e.errno, e.detail]
    # the same request with the SA info cut short: the kernel must reject its structure
    good = x.new_sa(sa, 99)
    body = good[16 : 16 + 100]
    try:
        b.nl.request("truncated state",
                     lambda seq: x.nlmsg(x.XFRM_MSG_NEWSA, x.NLM_F_REQUEST | x.NLM_F_ACK | x.NLM_F_CREATE, seq, body))
        out["truncated"] = "accepted"
    except XfrmError as e:
        out["truncated"] = [e.errno, e.detail]
    try:
        b.install_tunnel("198.18.1.2", "198.18.2.2", "198.19.255.1", "198.19.255.2", 7, 0x1001, bytes(20),
                         0x2001, bytes(20))
    except XfrmError as e:
        out["tunnel"] = [e.errno, e.detail]
    for d in (x.XFRM_POLICY_OUT, x.XFRM_POLICY_IN, x.XFRM_POLICY_FWD):
        s = sel if d == x.XFRM_POLICY_OUT else x.Selector("198.19.255.2/32", "198.19.255.1/32")
        src, dst = ("198.18.1.2", "198.18.2.2") if d == x.XFRM_POLICY_OUT else ("198.18.2.2", "198.18.1.2")
        b.add_policy(x.XfrmPolicy(s, d, src, dst, 7))
    out["policies"] = sorted((p.direction, p.src, p.dst, p.tmpl_src, p.tmpl_dst, p.reqid) for p in b.policies())
    try:
        b.add_policy(x.XfrmPolicy(sel, x.XFRM_POLICY_OUT, "198.18.1.2", "198.18.2.2", 7))
    except XfrmError as e:
        out["duplicate_policy"] = e.errno
    b.del_policy(sel, x.XFRM_POLICY_OUT)
    out["after_delete"] = len(b.policies())
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Put a QoS plan into the kernel: `tc` for the HTB trees (argv lists, never a shell; statistics from
netlink), `nft -j -f` for the classification table. Only what nsg made is
touched: the root and ingress qdiscs of the uplinks the plan shapes, the ifb devices it names
(ifb<hash>), and table inet nsg_qos. pyroute2 stays in the dataplane's one netlink module, so tc is
driven through its command line here, as nft is; the ifb devices are made and deleted there, and the
class counters (which `tc -j` does not print for HTB) are read there.

A plan equal to the one applied is a no-op (the trees are checked to still be there); a changed one
rebuilds the trees it touches (their queues are dropped once). An uplink whose device is not there
(yet) waits, reported, and is shaped at a later apply (the periodic resync tries again).
Blocking: call from a worker thread.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nsg.dataplane import netlink
from nsg.dataplane.errors import DataplaneError
from nsg.policy.apply import BridgeNetfilter, PolicyApplyError, nft_json, nft_text
from nsg.policy.tc import QOS_TABLE, LinkPlan, QosPlan

TC = shutil.which("tc") or "/usr/sbin/tc"
TIMEOUT = 10.0


def _run(argv: list[str], *, check: bool = True) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyApplyError(f"running {argv[0]}: {exc}") from None
    if check and p.returncode != 0:
        raise PolicyApplyError(f"{' '.join(argv[1:])}: {p.stderr.strip()[:500]}")
    return p.stdout


def _tc(*args: str, check: bool = True) -> str:
    return _run([TC, *args], check=check)


@dataclass
class QosState:
    digest: str | None = None
    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    shaped: list[str] = field(default_factory=list)  # devices with our trees
    waiting: list[str] = field(default_factory=list)  # uplinks not there (yet): shaped once they are


class TcQos:
    def __init__(self, bridge_nf: BridgeNetfilter | None = None) -> None:
        self.state = QosState()
        # shared with the firewall of the same Enforcement; a lone TcQos gets its own
        self._bridge_nf = bridge_nf if bridge_nf is not None else BridgeNetfilter()
        self._plan: QosPlan | None = None  # what is built (the uplinks that were there)
        self._wanted: str | None = None  # the digest of the whole plan it was built from

    @staticmethod
    def _has_tree(dev: str) -> bool:
        try:
            out = json.loads(_tc("-j", "qdisc", "show", "dev", dev) or "[]")
        except (PolicyApplyError, ValueError):
            return False
        return any(q.get("kind") == "htb" and q.get("handle") == "1:" and q.get("root") for q in out)

    @staticmethod
    def _clear(dev: str, ingress_of: str | None) -> None:
        _tc("qdisc", "del", "dev", dev, "root", check=False)
        if ingress_of is not None:
            _tc("qdisc", "del", "dev", ingress_of, "ingress", check=False)

    def _build(self, link: LinkPlan) -> None:
        if link.ingress_of is not None:  # the ifb: made (if need be) and up, then the uplink's ingress into it
            try:
                netlink.ifb_up(link.dev)
            except DataplaneError as exc:
                raise PolicyApplyError(str(exc)) from None
        self._clear(link.dev, link.ingress_of)
        for argv in link.argv():
            _tc(*argv)
        if link.ingress_of is not None:
            _tc("qdisc", "add", "dev", link.ingress_of, "handle", "ffff:", "ingress")
            _tc("filter", "add", "dev", link.ingress_of, "parent", "ffff:", "protocol", "all", "prio", "1", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", link.dev)

    def apply(self, new: QosPlan) -> bool:
        """True if the kernel changed. On an error the state is reported and raised; what was built
        stays (tc has no transactions), and the next apply rebuilds it."""
        old = self._plan
        present = tuple(lk for lk in new.links if Path(f"/sys/class/net/{lk.ingress_of or lk.dev}").exists())
        wanted = new.digest()
        if (old is not None and wanted == self._wanted and present == old.links
                and all(self._has_tree(lk.dev) for lk in present)):
            self.state.noop += 1
            return False
        self.state.waiting = sorted({lk.ingress_of or lk.dev for lk in new.links}
                                    - {lk.ingress_of or lk.dev for lk in present})
        new = QosPlan(present, new.nft, new.limiters)
        try:
            self._bridge_nf.set(self, new.limiters)  # policers must see bridged traffic too
            keep = {lk.dev for lk in new.links}
            for lk in old.links if old else ():
                if lk.dev not in keep:
                    self._drop(lk)
            for lk in new.links:
                self._build(lk)
            nft_text(new.nft)
        except PolicyApplyError as exc:
            self.state.errors += 1
            self.state.last_error = str(exc)
            # what may be half built is remembered, so remove() clears it; the next apply rebuilds it all
            self._plan, self._wanted = new, None
            raise
        self._plan, self._wanted = new, wanted
        self.state.digest, self.state.last_error = wanted, None
        self.state.applied += 1
        self.state.shaped = [lk.dev for lk in new.links]
        return True

    def _drop(self, lk: LinkPlan) -> None:
        self._clear(lk.dev, lk.ingress_of)
        if lk.ingress_of is not None:
            netlink.ifb_delete(lk.dev)

    def remove(self) -> bool:
        if self._plan is None:
            return False
        for lk in self._plan.links:
            self._drop(lk)
        nft_json({"nftables": [{"add": {"table": {"family": "inet", "name": QOS_TABLE}}},
                           {"delete": {"table": {"family": "inet", "name": QOS_TABLE}}}]})
        self._plan = None
        self.state.digest = None
        self.state.shaped = []
        self._bridge_nf.set(self, False)
        return True

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per device, per forwarding class: bytes, packets, drops, overlimits (what the kernel counted)."""
        if self._plan is None:
            return {}
        out: dict[str, dict[str, dict[str, int]]] = {}
        for lk in self._plan.links:
            counted = netlink.tc_class_stats(lk.dev)
            out[lk.dev] = {c.name: counted[(1 << 16) | c.minor] for c in lk.classes if (1 << 16) | c.minor in counted}
        return out

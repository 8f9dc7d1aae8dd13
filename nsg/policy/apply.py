"""Put a rendered policy into the kernel with `nft -j -f -`, in one transaction: the table is replaced
whole or not at all (a refused ruleset leaves the running one as it was). Only table inet nsg is
ever touched. The counters are carried over a re-apply (each rule's counter starts from what the
rule with the same comment had counted), and a re-apply of the same policy does nothing at all: not
even a render, when the config's policy and what it refers to are as they were.

Blocking (a subprocess): the daemon calls it from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nsg.model import GatewayConfig
from nsg.policy.nft import FAMILY, TABLE, render

NFT = shutil.which("nft") or "/usr/sbin/nft"
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
TIMEOUT = 30.0


class PolicyApplyError(RuntimeError):
    """nft refused the ruleset or could not be run (a local fault); the kernel keeps what it had."""


def nft_json(doc: dict | None, *args: str) -> str:
    return nft_text(json.dumps(doc) if doc is not None else None, *args)


def nft_text(doc: str | None, *args: str) -> str:
    """Run ``nft -j ARGS`` (with ``doc`` on stdin as ``-f -``); its output, or PolicyApplyError."""
    cmd = [NFT, "-j", *args] + (["-f", "-"] if doc is not None else [])
    try:
        p = subprocess.run(cmd, input=doc, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyApplyError(f"running nft: {exc}") from None
    if p.returncode != 0:
        raise PolicyApplyError(f"nft refused the ruleset: {p.stderr.strip()[:2000]}")
    return p.stdout


def table_counters(family: str, table: str) -> dict[str, dict[str, int]]:
    """What each commented rule of one table counted: {comment: {"packets", "bytes"}} (rules sharing a
    comment add up); {} without the table."""
    try:
        out = json.loads(nft_json(None, "list", "table", family, table) or "{}")
    except PolicyApplyError:
        return {}
    found: dict[str, dict[str, int]] = {}
    for item in out.get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for e in rule.get("expr", ()):
            if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                c = found.setdefault(rule["comment"], {"packets": 0, "bytes": 0})
                c["packets"] += e["counter"].get("packets", 0)
                c["bytes"] += e["counter"].get("bytes", 0)
    return found


class BridgeNetfilter:
    """Bridged IPv4 through the inet hooks (conntrack, reject, policers) while someone needs it (the
    firewall, QoS limiters); the value found before is put back when the last one lets go. One of
    these is shared by the parts of one Enforcement (so they agree on who still needs it); ``path`` is
    the sysctl (a plain file in tests)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else BRIDGE_NF
        self._users: set[int] = set()
        self._before: str | None = None  # the value found before the first user turned it on

    @property
    def users(self) -> int:
        return len(self._users)

    def set(self, user: object, on: bool) -> None:
        """``user`` needs it (on) or no longer does. Raises PolicyApplyError if the sysctl is not there
        or not writable."""
        try:
            if on and id(user) not in self._users:
                if not self._users:
                    self._before = self.path.read_text().strip()
                    self.path.write_text("1")
                self._users.add(id(user))
            elif not on and id(user) in self._users:
                self._users.discard(id(user))
                if not self._users and self._before is not None:
                    before, self._before = self._before, None
                    self.path.write_text(before)
        except OSError as exc:
            raise PolicyApplyError(f"{self.path}: {exc.strerror} (is br_netfilter in this kernel?)") from None


@dataclass
class PolicyState:
    digest: str | None = None  # of the last ruleset applied (a short SHA-256, for status)
    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    counters: list[str] = field(default_factory=list)


class NftPolicy:
    def __init__(self, bridge_nf: BridgeNetfilter | None = None) -> None:
        self.state = PolicyState()
        self._inputs: tuple | None = None
        # shared with the QoS of the same Enforcement; a lone NftPolicy (bench) gets its own
        self._bridge_nf = bridge_nf if bridge_nf is not None else BridgeNetfilter()

    def _have_table(self) -> bool:
        out = json.loads(nft_json(None, "list", "tables", FAMILY) or "{}")
        return any("table" in o and o["table"]["name"] == TABLE for o in out.get("nftables", []))

    def counters(self) -> dict[str, dict[str, int]]:
        """What each rule of our table counted, by its comment: {"packets", "bytes"} (rules sharing a
        comment add up); {} without the table."""
        return table_counters(FAMILY, TABLE)

    def _bridge_netfilter(self, on: bool) -> None:
        self._bridge_nf.set(self, on)

    def apply_config(self, cfg: GatewayConfig, uplink_ifaces: dict[str, str], *, verify: bool = False) -> bool:
        """Render and apply ``cfg``'s policy unless nothing it depends on changed; True if the kernel
        changed. ``verify`` (the periodic resync) also checks that our table is still in the kernel
        (listing costs ~0.1 s with a large ruleset, so a reload of an unchanged config does not).
        Raises PolicyApplyError with the old ruleset still in force."""
        inputs = (cfg.policy, cfg.subnets, cfg.apps, cfg.vms, tuple(sorted(uplink_ifaces.items())))
        self._bridge_netfilter(True)
        if inputs == self._inputs and (not verify or self._have_table()):
            self.state.noop += 1
            return False
        keep = self.counters() if self._inputs is not None else {}  # each rule starts where it was
        rendered = render(cfg, uplink_ifaces, start=keep)
        try:
            nft_text(rendered.document)
        except PolicyApplyError as exc:
            self.state.errors += 1
            self.state.last_error = str(exc)
            raise
        self._inputs = inputs
        self.state.digest = hashlib.sha256(rendered.document.encode()).hexdigest()[:16]
        self.state.last_error = None
        self.state.applied += 1
        self.state.counters = list(rendered.counters)
        return True

    def remove(self) -> bool:
        """No policy: our table goes (nothing else is touched)."""
        changed = False
        if self.state.digest is not None or self._have_table():
            nft_json({"nftables": [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                               {"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})
            changed = True
        self.state.digest = None
        self._inputs = None
        self._bridge_netfilter(False)
        return changed

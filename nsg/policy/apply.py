"""Put a rendered policy into the kernel with `nft -j -f -`, in one transaction: the table is replaced
whole or not at all (a refused ruleset leaves the running one as it was). Only table inet nsg is
ever touched. The named counters are carried over a re-apply (their values go into the new
objects), and a re-apply of the same ruleset does nothing at all.

Blocking (a subprocess): the daemon calls it from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nsg.policy.nft import FAMILY, TABLE, Rendered

NFT = shutil.which("nft") or "/usr/sbin/nft"
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
TIMEOUT = 30.0


class PolicyApplyError(RuntimeError):
    """nft refused the ruleset or could not be run (a local fault); the kernel keeps what it had."""


def _nft(doc: dict | None, *args: str) -> str:
    cmd = [NFT, "-j", *args] + (["-f", "-"] if doc is not None else [])
    try:
        p = subprocess.run(cmd, input=json.dumps(doc) if doc is not None else None, capture_output=True,
                           text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyApplyError(f"running nft: {exc}") from None
    if p.returncode != 0:
        raise PolicyApplyError(f"nft refused the ruleset: {p.stderr.strip()[:2000]}")
    return p.stdout


@dataclass
class PolicyState:
    digest: str | None = None  # of the last ruleset applied
    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    counters: list[str] = field(default_factory=list)


class NftPolicy:
    def __init__(self) -> None:
        self.state = PolicyState()
        self._bridge_nf_before: str | None = None

    def _have_table(self) -> bool:
        out = json.loads(_nft(None, "list", "tables", FAMILY) or "{}")
        return any("table" in o and o["table"]["name"] == TABLE for o in out.get("nftables", []))

    def counters(self) -> dict[str, dict[str, int]]:
        """The named counters of our table: name -> {"packets", "bytes"}; {} without the table."""
        try:
            out = json.loads(_nft(None, "list", "counters", "table", FAMILY, TABLE) or "{}")
        except PolicyApplyError:
            return {}
        return {c["counter"]["name"]: {"packets": c["counter"]["packets"], "bytes": c["counter"]["bytes"]}
                for c in out.get("nftables", []) if "counter" in c}

    def _bridge_netfilter(self, on: bool) -> None:
        """Bridged IPv4 through the inet hooks (conntrack, reject) while a policy is in force; the value
        found before is put back when it is lifted."""
        try:
            if on and self._bridge_nf_before is None:
                self._bridge_nf_before = BRIDGE_NF.read_text().strip()
                BRIDGE_NF.write_text("1")
            elif not on and self._bridge_nf_before is not None:
                BRIDGE_NF.write_text(self._bridge_nf_before)
                self._bridge_nf_before = None
        except OSError as exc:
            raise PolicyApplyError(f"{BRIDGE_NF}: {exc.strerror} (is br_netfilter in this kernel?)") from None

    def apply(self, rendered: Rendered) -> bool:
        """Returns True if the kernel changed. Raises PolicyApplyError, the old ruleset still in force."""
        digest = hashlib.sha256(json.dumps(rendered.commands, sort_keys=True).encode()).hexdigest()
        self._bridge_netfilter(True)
        if digest == self.state.digest and self._have_table():
            self.state.noop += 1
            return False
        keep = self.counters()  # carried into the new table for entries that stay
        cmds = [c if "counter" not in c.get("add", {}) or c["add"]["counter"]["name"] not in keep else
                {"add": {"counter": {**c["add"]["counter"], **keep[c["add"]["counter"]["name"]]}}}
                for c in rendered.commands]
        try:
            _nft({"nftables": cmds})
        except PolicyApplyError as exc:
            self.state.errors += 1
            self.state.last_error = str(exc)
            raise
        self.state.digest, self.state.last_error = digest, None
        self.state.applied += 1
        self.state.counters = list(rendered.counters)
        return True

    def remove(self) -> bool:
        """No policy: our table goes (nothing else is touched)."""
        changed = False
        if self.state.digest is not None or self._have_table():
            _nft({"nftables": [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                               {"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})
            changed = True
        self.state.digest = None
        self._bridge_netfilter(False)
        return changed

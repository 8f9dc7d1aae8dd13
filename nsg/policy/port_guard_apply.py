"""Table bridge nsg_port in the kernel: apply (one `nft -j -f -` transaction, keeping learned MACs and
counters across a re-apply), read back (MACs and drops per port), remove. And the bridge option that
closes the one learning path no netfilter hook sees (LLDP, STP BPDUs), through sysfs. Whether the
kernel can close a bridge to its stray ports (meta ibrname) is probed at each apply, with a dry run.

Blocking (subprocesses, file writes): the daemon calls these from a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nsg.policy import port_guard as pg
from nsg.policy.apply import PolicyApplyError, nft_text

SYS_CLASS_NET = Path("/sys/class/net")


def present() -> bool:
    out = json.loads(nft_text(None, "list", "tables", pg.FAMILY) or "{}")
    return any(o.get("table", {}).get("name") == pg.TABLE for o in out.get("nftables", []))


def read() -> pg.PortGuardReading | None:
    """MACs and drops per port, now; None without the table. Raises PolicyApplyError (nft failed) or
    pg.PortGuardReadError (its listing is not what we wrote)."""
    if not present():
        return None
    return pg.parse(nft_text(None, "list", "table", pg.FAMILY, pg.TABLE))


def bridge_meta() -> bool:
    """Does this kernel match meta ibrname in the bridge family (nft_meta_bridge)? `nft -c` sends the
    probe table and aborts it: nothing is added. False also when nft cannot run (apply will say why)."""
    try:
        nft_text(pg.probe_document(), "-c")
    except PolicyApplyError:
        return False
    return True


def apply(want: pg.PortGuard, by_bridge: bool = True) -> None:
    """Replace the table whole, carrying over what each port had learned and what was counted (a few
    frames counted between the read and the replace are lost). ``by_bridge``: bridge_meta() said yes,
    the guarded bridges drop stray ports. Raises PolicyApplyError with the old table still in force."""
    before = read()
    nft_text(pg.render(want, before.carry() if before is not None else None, by_bridge))


def forget(macs_by_port: dict[str, list[str]]) -> int:
    """Take MACs out of LAN ports' sets: hosts that EVPN says are at another site now (moved away), so
    that their frames from the overlay are no longer taken for a remote site spoofing a local host.
    One transaction; returns how many were taken out. Raises PolicyApplyError."""
    cmds = [{"delete": {"element": {"family": pg.FAMILY, "table": pg.TABLE, "name": pg.set_name(port),
                                    "elem": sorted(macs)}}}
            for port, macs in sorted(macs_by_port.items()) if macs]
    if not cmds:
        return 0
    nft_text(json.dumps({"nftables": cmds}))
    return sum(len(m) for m in macs_by_port.values())


def remove() -> bool:
    """Our table goes (nothing else is touched); True if it was there."""
    if not present():
        return False
    nft_text(pg.remove_document())
    return True


def linklocal_learning_off(bridges: tuple[str, ...] | list[str], sysfs: Path = SYS_CLASS_NET) -> tuple[str, ...]:
    """Set the bridge option no_linklocal_learn (BROPT_NO_LL_LEARN, Linux 5.4+) on ``bridges``: frames to
    01:80:c2:00:00:0X are then never learned from. LLDP (and STP BPDUs with STP on) are learned in
    br_handle_frame() with no netfilter hook in between, so the port guard cannot stop a flood of them;
    no host needs its MAC learned from those frames. Returns the bridges not there (yet). It belongs to
    the bridge's own settings (the dataplane's LinkSpec) once that can carry it."""
    missing = []
    for br in bridges:
        knob = sysfs / br / "bridge" / "no_linklocal_learn"
        try:
            if knob.read_text().strip() != "1":
                knob.write_text("1")
        except FileNotFoundError:
            missing.append(br)
        except OSError as exc:
            raise PolicyApplyError(f"{knob}: {exc.strerror}") from None
    return tuple(missing)


@dataclass
class PortGuardState:
    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None


class NftPortGuard:
    """What the daemon holds: the port guard in force, applied only when it changed (or, with
    ``verify``, when the table went missing from the kernel)."""

    def __init__(self, sysfs: Path = SYS_CLASS_NET) -> None:
        self.want: pg.PortGuard | None = None
        self.state = PortGuardState()
        self.sysfs = sysfs
        self.bridges_missing: tuple[str, ...] = ()  # bridges without no_linklocal_learn: not made yet
        self.by_bridge = False  # what bridge_meta() said for the table in force

    def set(self, want: pg.PortGuard, verify: bool = False) -> bool:
        """True if the kernel changed. Raises PolicyApplyError (the table in force stays)."""
        try:
            # every pass (a write only where it is off): a bridge made since the last one gets it too
            self.bridges_missing = linklocal_learning_off(want.bridges, self.sysfs)
            if want == self.want and (not verify or present()):
                self.state.noop += 1
                return False
            by_bridge = bridge_meta()  # asked at each apply (rare), not kept across them
            apply(want, by_bridge)
        except (PolicyApplyError, pg.PortGuardReadError) as exc:
            self.state.errors += 1
            self.state.last_error = str(exc)
            raise PolicyApplyError(f"port guard: {exc}") from None
        self.want, self.by_bridge = want, by_bridge
        self.state.applied += 1
        self.state.last_error = None
        return True

    def forget_remote(self, remote: set[str] | frozenset[str]) -> int:
        """MACs that EVPN now places at another site leave the LAN ports' sets (a host that moved away:
        otherwise its frames from the overlay count as spoofing until the entry ages out)."""
        if self.want is None or not remote:
            return 0
        reading = read()
        if reading is None:
            return 0
        stale = {name: [m for m in p.macs if m in remote] for name, p in reading.ports.items() if p.kind == "lan"}
        return forget(stale)

    def remove(self) -> bool:
        self.want = None
        return remove()

    def status(self) -> dict | None:
        """Per port: MACs held and the limit (LAN and workload ports), drops by reason; the bridges
        closed to stray ports (none where the kernel cannot match meta ibrname); None without a guard."""
        if self.want is None and self.state.applied == 0:
            return None
        reading = read()
        st = self.state
        closed = [o.bridge for o in self.want.overlays if o.closed] if self.want is not None and self.by_bridge else []
        return {"applied": st.applied, "noop": st.noop, "errors": st.errors, "last_error": st.last_error,
                "bridges_missing": list(self.bridges_missing), "bridges_closed": closed,
                "ports": reading.as_dict() if reading is not None else {}}

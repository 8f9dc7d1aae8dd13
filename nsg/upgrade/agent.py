"""The daemon's upgrade agent, pure: from the config's target (nsg.model.upgrade.UpgradeTarget), what the
box is (its release, slots and upgrade record) and what the agent tried before, what to do now; and the
report `nsg status` shows and the controller is sent (nsg.model.upgrade.UpgradeState). The driver that
downloads, installs and reboots in a worker thread is nsg/subsystems/upgrade.py.

The rules, each for a reason:

- **Nothing on a box that is not an A/B appliance** (no release.json: a development tree; no slot on the
  kernel command line, no GRUB env): the report says why, and that is all.
- **The running release decides**: the target is installed only while the box runs another version and
  commits the one it runs (during a trial, settle decides first: nsg/upgrade/health.py).
- **A version that failed here is not tried again by itself**: a trial that fell back (or was not
  healthy), a write that failed, a bundle refused (signature, model, downgrade) hold that target until
  the operator changes it or bumps its ``retry`` (`nsg-controller upgrade set --retry`); the controller
  sees why. The same key (version, retry, bundle) is never installed twice in a row.
- **What is not the version's fault is tried again, boundedly**: a failed download waits 30 s, doubling
  up to an hour; a run that never finished (the daemon restarted, the power cut; the record then says
  "interrupted") starts again at most MAX_UNFINISHED times.
- **Idempotent across restarts**: what the agent began is on the data partition (upgrade-agent.json,
  next to upgrade.json); a slot it armed and did not boot yet is rebooted into, at most MAX_REBOOTS times
  (a boot loader that ignores nsg_try must not make a reboot loop).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from nsg.model.upgrade import (
    MAX_REASON,
    MAX_REFUSAL_CODES,
    Action,
    AgentReport,
    AttemptReport,
    RefusalReport,
    UpgradeBundle,
    UpgradeState,
    UpgradeTarget,
)
from nsg.upgrade.durable import replace_file
from nsg.upgrade.record import Phase
from nsg.upgrade.slots import State, UpgradeReport

log = logging.getLogger("nsg.upgrade")

AGENT_FILE = "upgrade-agent.json"
MAX_UNFINISHED = 3  # runs of one key that never ended (restart, power cut) before it is held
MAX_REBOOTS = 2  # reboots into one armed slot before it is held
RETRY_FIRST_S, RETRY_MAX_S = 30.0, 3600.0  # a failed download is tried again after these, doubling
FAILED_PHASES = (Phase.FELL_BACK, Phase.UNHEALTHY, Phase.FAILED)


class Outcome(StrEnum):
    STARTED = "started"  # a run began (download, then install); not ended yet, or never will
    DOWNLOAD_FAILED = "download-failed"  # the server or the network: tried again at retry_at
    REFUSED = "refused"  # the bundle or the box said no (signature, model, downgrade, no slot): held
    ARMED = "armed"  # written and armed; the reboot comes next
    REBOOTING = "rebooting"  # the reboot into the armed slot was asked for


class Tried(BaseModel):
    """upgrade-agent.json: the last key the agent worked on and how far it got. Unknown fields are ignored
    and a file that does not parse counts as none: the data partition is shared with other releases."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal[1] = 1
    version: str
    retry: int
    sha256: str
    outcome: Outcome
    at: float
    reason: str = ""
    unfinished: int = 0  # runs begun and never ended
    reboots: int = 0
    failures: int = 0  # downloads failed in a row
    retry_at: float = 0.0

    def key(self) -> tuple[str, int, str]:
        return self.version, self.retry, self.sha256


def key_of(target: UpgradeTarget, bundle: UpgradeBundle) -> tuple[str, int, str]:
    return target.version, target.retry, bundle.sha256


def begin(tried: Tried | None, target: UpgradeTarget, bundle: UpgradeBundle, now: float) -> Tried:
    """The record of a run that begins now."""
    same = tried is not None and tried.key() == key_of(target, bundle)
    if same:
        assert tried is not None
        return tried.model_copy(update={"outcome": Outcome.STARTED, "at": now, "unfinished": tried.unfinished + 1})
    return Tried(version=target.version, retry=target.retry, sha256=bundle.sha256, outcome=Outcome.STARTED, at=now,
                 unfinished=1)


def ended(tried: Tried, outcome: Outcome, now: float, reason: str = "") -> Tried:
    """The record of a run that ended with ``outcome`` (a download failure sets the next try's time)."""
    update: dict = {"outcome": outcome, "at": now, "reason": reason[:2000], "unfinished": 0}
    if outcome is Outcome.DOWNLOAD_FAILED:
        failures = tried.failures + 1
        update |= {"failures": failures, "retry_at": now + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))}
    elif outcome is Outcome.REBOOTING:
        update |= {"reboots": tried.reboots + 1}
    else:
        update |= {"failures": 0}
    return tried.model_copy(update=update)


def load_tried(path: Path) -> Tried | None:
    try:
        return Tried.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("upgrade agent record %s unreadable (%s): taken as none", path, str(exc).splitlines()[0])
        return None


def save_tried(path: Path, tried: Tried) -> None:
    """temp + fsync + rename (as nsg.upgrade.record does); OSError is the caller's."""
    replace_file(path, json.dumps(tried.model_dump(mode="json"), indent=1, sort_keys=True).encode() + b"\n")


# --- what to do -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """An A/B appliance as it is now: its own release and its slots and record."""

    model: str
    running: str
    report: UpgradeReport


class Do(StrEnum):
    NOTHING = "nothing"
    INSTALL = "install"  # download the bundle, install it, reboot
    REBOOT = "reboot"  # the target is armed already: reboot into it


@dataclass(frozen=True)
class Decision:
    do: Do
    action: Action
    detail: str = ""
    bundle: UpgradeBundle | None = None
    wake_at: float | None = None  # decide again then (a download to try again)


def _nothing(action: Action, detail: str, wake_at: float | None = None) -> Decision:
    return Decision(Do.NOTHING, action, detail, wake_at=wake_at)


def decide(target: UpgradeTarget | None, facts: Facts | str, tried: Tried | None, now: float) -> Decision:
    """``facts``: the box, or why it is no A/B appliance. Called only while no run is in progress."""
    if isinstance(facts, str):
        return _nothing("not-appliance", facts)
    if target is None:
        return _nothing("none", "the controller sets no upgrade for this gateway")
    v, rep = target.version, facts.report
    if facts.running == v:
        if rep.state is State.TRIAL:
            return _nothing("trial", f"running {v} on trial in slot {rep.booted_slot}: it is committed once healthy")
        return _nothing("up-to-date", f"running {v}")
    bundle = target.bundle_for(facts.model)
    if bundle is None:
        have = ", ".join(b.model for b in target.bundles)
        return _nothing("no-bundle", f"no bundle of {v} for model {facts.model} (the controller has: {have})")
    if rep.state is State.TRIAL:
        return _nothing("trial", f"slot {rep.booted_slot} ({facts.running}) is on trial: {v} waits until it is "
                                 "committed or has fallen back")
    a = rep.last_attempt
    at_target = a is not None and a.target_version == v
    failed = at_target and (a.phase in FAILED_PHASES or (rep.state is State.FELL_BACK and not a.phase.final))
    why_failed = f"{v} was tried here and {'fell back' if failed and a.phase is not Phase.FAILED else 'failed'}" + (
        f": {a.reason}" if a is not None and a.reason else "")
    retry_hint = "; the operator may try it again (nsg-controller upgrade set --retry)"
    mine = tried is not None and tried.key() == key_of(target, bundle)
    if not mine:
        if failed and target.retry == 0:
            return _nothing("held", why_failed + retry_hint)
        return Decision(Do.INSTALL, "downloading", f"{v} from {bundle.url}", bundle)
    assert tried is not None
    if rep.state is State.ARMED and at_target:
        if tried.reboots >= MAX_REBOOTS:
            return _nothing("held", f"slot {rep.armed_slot} holds {v}, armed, but {tried.reboots} reboots did not "
                                    "start it: the boot loader does not take nsg_try")
        return Decision(Do.REBOOT, "rebooting", f"into slot {rep.armed_slot} ({v})", bundle)
    if tried.outcome is Outcome.REFUSED:
        return _nothing("held", f"{v} refused: {tried.reason}" + retry_hint)
    if failed:
        return _nothing("held", why_failed + retry_hint)
    if tried.outcome in (Outcome.ARMED, Outcome.REBOOTING):
        return _nothing("held", f"{v} was armed here and is no longer (the GRUB env was changed by someone "
                                "else)" + retry_hint)
    if tried.outcome is Outcome.DOWNLOAD_FAILED and now < tried.retry_at:
        return _nothing("retry-wait", f"download of {v} failed ({tried.failures} in a row: {tried.reason}); "
                                      f"next try in {tried.retry_at - now:.0f} s", wake_at=tried.retry_at)
    if tried.outcome is Outcome.STARTED and tried.unfinished >= MAX_UNFINISHED:
        return _nothing("held", f"{tried.unfinished} runs for {v} never finished (daemon restarts or power cuts)"
                        + retry_hint)
    return Decision(Do.INSTALL, "downloading", f"{v} from {bundle.url}", bundle)


# --- the report ---------------------------------------------------------------------------------------


def text(value: str, limit: int = MAX_REASON) -> str:
    """A reason for the report: ASCII (escapes for the rest), one line, at most ``limit`` characters,
    so that a whole report fits a channel event (4 KiB) whatever a message holds."""
    flat = " ".join(value.split()).encode("ascii", "backslashreplace").decode()
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def code(value: str) -> str:
    """An error code for the report: lower-case letters, digits and '-', at most 48 characters."""
    flat = re.sub(r"[^a-z0-9-]", "-", value.lower()).lstrip("-")[:48]
    return flat or "unknown"


def not_an_appliance(why: str, agent: AgentReport) -> UpgradeState:
    return UpgradeState(appliance=False, detail=text(why), agent=agent)


def state_of(facts: Facts, agent: AgentReport) -> UpgradeState:
    rep = facts.report
    a, r = rep.last_attempt, rep.last_refusal
    attempt = None if a is None else AttemptReport(
        from_version=text(a.from_version, 64), target_version=text(a.target_version, 64), from_slot=a.from_slot,
        target_slot=a.target_slot, phase=a.phase.value, started=a.started, updated=a.updated,  # type: ignore[arg-type]
        reason=text(a.reason))
    refusal = None if r is None else RefusalReport(at=r.at, code=code(r.code), fault=r.fault,  # type: ignore[arg-type]
                                                   message=text(r.message))
    merged: dict[str, int] = {}
    for c, n in rep.refused.items():
        merged[code(c)] = min(2**63 - 1, merged.get(code(c), 0) + n)
    counts = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_REFUSAL_CODES]
    return UpgradeState(
        appliance=True, model=facts.model, running_version=text(facts.running, 64),
        committed_version=rep.committed_version and text(rep.committed_version, 64), booted_slot=rep.booted_slot,
        committed_slot=rep.committed_slot, armed_slot=rep.armed_slot, state=rep.state.value,  # type: ignore[arg-type]
        slot_versions={s: v and text(v, 64) for s, v in rep.slot_versions.items()}, last_attempt=attempt,
        last_refusal=refusal, refused=dict(counts), agent=agent)


def agent_report(action: Action, target: UpgradeTarget | None, detail: str, since: float | None) -> AgentReport:
    return AgentReport(action=action, target=target.version if target else None, detail=text(detail), since=since)


def event_detail(state: UpgradeState) -> dict:
    """The report as a channel event's detail (kind "upgrade"): at most 4 KiB as JSON, by its bounds and
    text() (tests/unit/upgrade/test_agent.py measures the largest)."""
    return state.model_dump(mode="json")

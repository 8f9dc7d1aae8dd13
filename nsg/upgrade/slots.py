"""A/B slot state, pure: from the GRUB env, the slot this boot came from (``nsg.slot=`` on the kernel
command line) and the upgrade record, what state the box is in, what may happen next, and what the
controller is told.

The boot contract (grub.cfg, written by the image builder): ``nsg_slot`` is the committed slot;
``nsg_try``, when set, is booted once: grub.cfg clears it with save_env *before* booting it, so any
failure before a commit (kernel panic, hang until the watchdog, a userspace that never gets healthy)
boots ``nsg_slot`` again by itself. States::

    committed --install--> armed --reboot--> trial --healthy--> committed (nsg_slot = the new slot)
        ^   \\--(power cut while writing)--> interrupted     \\--not healthy, crash, hang--> fell-back
        +---------------- recorded at the next settle --------------------------------------+

    booted == nsg_slot, nsg_try empty ....... committed, or (per the record) fell-back / interrupted
    booted == nsg_slot, nsg_try == other .... armed
    booted != nsg_slot ....................... trial (whatever nsg_try says)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from nsg.upgrade.errors import BoxError
from nsg.upgrade.grubenv import GrubEnv
from nsg.upgrade.record import Attempt, Phase, Record, Refusal, Slot

SLOTS: tuple[Slot, Slot] = ("a", "b")
COMMITTED_VAR, TRY_VAR = "nsg_slot", "nsg_try"
CMDLINE_KEY = "nsg.slot"


class State(StrEnum):
    COMMITTED = "committed"  # running the committed slot, nothing pending
    ARMED = "armed"  # the other slot is written and boots once at the next reboot
    TRIAL = "trial"  # running a slot once: it commits when healthy, else the next boot falls back
    FELL_BACK = "fell-back"  # this boot is the old slot after a trial that did not commit (not yet recorded)
    INTERRUPTED = "interrupted"  # a write of the other slot stopped part way (not yet recorded)


def other(slot: Slot) -> Slot:
    return "b" if slot == "a" else "a"


def booted_slot(cmdline: str) -> Slot:
    values = [tok.split("=", 1)[1] for tok in cmdline.split() if tok.startswith(CMDLINE_KEY + "=")]
    if not values:
        raise BoxError("no-booted-slot", f"the kernel command line has no {CMDLINE_KEY}=a|b: this boot did not "
                                         f"come from the A/B boot menu")
    if values[-1] not in SLOTS:  # the kernel passes the last of repeated parameters to userspace too
        raise BoxError("no-booted-slot", f"the kernel command line says {CMDLINE_KEY}={values[-1]}, not a or b")
    return values[-1]  # type: ignore[return-value]


@dataclass(frozen=True)
class BootView:
    booted: Slot
    committed: Slot
    trying: Slot | None  # nsg_try
    state: State

    @property
    def inactive(self) -> Slot:
        return other(self.booted)


def view(env: GrubEnv, booted: Slot, attempt: Attempt | None, *, writer_running: bool = False) -> BootView:
    committed = env.get(COMMITTED_VAR)
    if committed not in SLOTS:
        raise BoxError("grubenv-invalid", f"GRUB env {COMMITTED_VAR}={committed!r}: the committed slot is unknown")
    trying = env.get(TRY_VAR) or None
    if trying is not None and trying not in SLOTS:
        raise BoxError("grubenv-invalid", f"GRUB env {TRY_VAR}={trying!r}: neither a, b nor empty")
    if booted != committed:
        state = State.TRIAL
    elif trying == other(booted):
        state = State.ARMED
    elif attempt is not None and attempt.target_slot == other(booted) and attempt.from_slot == booted:
        if attempt.phase in (Phase.ARMED, Phase.TRYING, Phase.UNHEALTHY):
            state = State.FELL_BACK
        elif attempt.phase is Phase.WRITING and not writer_running:
            state = State.INTERRUPTED
        else:
            state = State.COMMITTED
    else:
        state = State.COMMITTED
    return BootView(booted, committed, trying, state)  # type: ignore[arg-type]


def check_installable(v: BootView) -> None:
    if v.state is State.TRIAL:
        raise BoxError("in-trial", f"this boot is an uncommitted trial of slot {v.booted} (slot {v.committed} is "
                                   f"the committed one): wait until it commits or falls back")


# -- the env edits (each returns the new env; the caller writes it) --------------------------------

def disarm(env: GrubEnv) -> GrubEnv:
    return env.set(TRY_VAR, "")


def arm(env: GrubEnv, v: BootView) -> GrubEnv:
    check_installable(v)
    return env.set(TRY_VAR, v.inactive)


def commit(env: GrubEnv, v: BootView) -> GrubEnv:
    if v.state is not State.TRIAL:
        raise BoxError("not-in-trial", f"nothing to commit: this box runs its committed slot {v.committed}")
    return env.set(COMMITTED_VAR, v.booted).set(TRY_VAR, "")


# -- the record's view of the same events ------------------------------------------------------------

def settle_record(v: BootView, attempt: Attempt | None, now: float) -> Attempt | None:
    """The attempt as it must be recorded at this boot (None: unchanged): a fall-back or an interrupted
    write says why; a commit whose record update was lost to a power cut is recorded as committed."""
    if attempt is None or attempt.phase.final:
        return None
    target = f"slot {attempt.target_slot} ({attempt.target_version})"
    if v.state is State.FELL_BACK:
        reason = {
            Phase.ARMED: f"{target} never reached userspace: the boot failed before nsg could check it",
            Phase.TRYING: f"{target} booted but stopped (crash, reboot or power cut) before it was healthy",
        }.get(attempt.phase, attempt.reason or f"{target} was not healthy")
        return attempt.model_copy(update={"phase": Phase.FELL_BACK, "updated": now, "reason": reason})
    if v.state is State.INTERRUPTED:
        return attempt.model_copy(update={"phase": Phase.INTERRUPTED, "updated": now,
                                          "reason": f"writing {target} stopped part way (power cut or killed); "
                                                    f"slot {v.committed} kept"})
    if v.state is State.COMMITTED and attempt.target_slot == v.booted == v.committed:
        return attempt.model_copy(update={"phase": Phase.COMMITTED, "updated": now})
    return None


class UpgradeReport(BaseModel):
    """What `nsg upgrade status` shows and the controller is sent."""

    model_config = ConfigDict(frozen=True)

    state: State
    booted_slot: Slot
    committed_slot: Slot
    armed_slot: Slot | None
    running_version: str | None
    committed_version: str | None
    slot_versions: dict[Slot, str | None]
    last_attempt: Attempt | None
    refused: dict[str, int]
    last_refusal: Refusal | None


def report(v: BootView, record: Record, running_version: str | None) -> UpgradeReport:
    versions = {**record.slot_versions}
    if running_version is not None:
        versions[v.booted] = running_version  # the running image's own word beats the record
    return UpgradeReport(state=v.state, booted_slot=v.booted, committed_slot=v.committed, armed_slot=v.trying,
                         running_version=running_version, committed_version=versions.get(v.committed),
                         slot_versions=versions, last_attempt=record.attempt, refused=record.refused,
                         last_refusal=record.last_refusal)

"""After every boot: commit a healthy trial, reboot an unhealthy one, record what the last attempt came to.

Run once per boot, by the daemon (a task next to the channel) or by a oneshot unit after it
(`nsg upgrade settle`). "Healthy" is the probe's to say (the daemon up and its controller channel
established, in nsg); the probe is a callable so tests and other callers can give their own. The window
(``commit_after_s``) comes from the attempt the install recorded (`nsg upgrade --commit-after`), and is
counted from the start of settle: the time before userspace (firmware, GRUB, kernel) is the hardware
watchdog's and the kernel's ``panic=`` to bound, not ours. An unhealthy trial clears nsg_try (should
grub.cfg have failed to) and reboots: nsg_slot still names the old slot, so the box falls back by itself
and the next settle records it, for the controller to see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nsg.upgrade.errors import BoxError
from nsg.upgrade.grubenv import read_env, write_env
from nsg.upgrade.install import DEFAULT_COMMIT_AFTER_S, Box, current, locked
from nsg.upgrade.manifest import read_release
from nsg.upgrade.record import Attempt, Phase, Slot, save_record
from nsg.upgrade.slots import TRY_VAR, State, commit, disarm, settle_record

log = logging.getLogger("nsg.upgrade")


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""  # what is missing, when not ok ("controller channel down: ...")


Probe = Callable[[], Awaitable[Health]]
Reboot = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Settled:
    state: State  # the state this boot found
    outcome: str  # "nothing to do", "committed", "rebooting", or the recorded phase of the last attempt
    detail: str = ""


async def settle(box: Box, probe: Probe, reboot: Reboot, *, poll_s: float = 2.0,
                 default_commit_after_s: float = DEFAULT_COMMIT_AFTER_S,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> Settled:
    with locked(box):
        env, v, record = current(box, holding_lock=True)
        if v.state is not State.TRIAL:
            settled = settle_record(v, record.attempt, wall())
            if settled is None:
                return Settled(v.state, "nothing to do")
            save_record(box.record_path, record.with_attempt(settled))
            log.info("last upgrade attempt: %s %s", settled.phase, settled.reason)
            return Settled(v.state, str(settled.phase), settled.reason)

        attempt = record.attempt
        if attempt is None or attempt.target_slot != v.booted or attempt.phase.final:
            attempt = _unrecorded_trial(box, v.booted, v.committed, record.slot_versions, default_commit_after_s,
                                        wall())
        window = attempt.commit_after_s
        attempt = attempt.model_copy(update={"phase": Phase.TRYING, "updated": wall()})
        record = record.with_attempt(attempt)
        save_record(box.record_path, record)

        deadline = clock() + window
        health = await probe()
        while not health.ok and clock() < deadline:
            await sleep(min(poll_s, max(0.0, deadline - clock())))
            health = await probe()

        env = read_env(box.grubenv)
        if health.ok:
            write_env(box.grubenv, commit(env, v))
            done = attempt.model_copy(update={"phase": Phase.COMMITTED, "updated": wall()})
            save_record(box.record_path, record.with_attempt(done, **{v.booted: attempt.target_version}))
            log.info("slot %s committed: healthy", v.booted)
            return Settled(v.state, "committed")

        reason = f"slot {v.booted} was not healthy within {window:g} s: {health.detail or 'no detail'}"
        if env.get(TRY_VAR):
            write_env(box.grubenv, disarm(env))
        failed = attempt.model_copy(update={"phase": Phase.UNHEALTHY, "updated": wall(), "reason": reason})
        save_record(box.record_path, record.with_attempt(failed))
        log.warning("%s; rebooting to slot %s", reason, v.committed)
    await reboot()
    return Settled(State.TRIAL, "rebooting", reason)


def _unrecorded_trial(box: Box, booted: Slot, committed: Slot, versions: dict, window: float, now: float) -> Attempt:
    """A trial the record does not describe (the data partition was replaced, or the slot was armed by
    hand): judged all the same, and recorded so that the controller hears of it."""
    try:
        running = read_release(box.release).version
    except BoxError:
        running = "unknown"
    return Attempt(from_slot=committed, from_version=versions.get(committed) or "unknown", target_slot=booted,
                   target_version=running, phase=Phase.TRYING, started=now, updated=now, commit_after_s=window,
                   reason="not armed by nsg upgrade")


async def systemctl_reboot() -> None:
    proc = await asyncio.create_subprocess_exec("systemctl", "reboot")
    await proc.wait()


def control_socket_probe(state_dir: Path) -> Probe:
    """Healthy when the daemon of ``state_dir`` answers and reports its controller channel connected."""
    from nsg.control_socket import ControlError, request

    async def probe() -> Health:
        try:
            st = await asyncio.to_thread(request, state_dir, "status", 5.0)
        except (ControlError, OSError) as exc:
            return Health(False, f"daemon not answering: {exc}")
        ch = st.get("channel") if isinstance(st, dict) else None
        if not isinstance(ch, dict):
            return Health(False, "daemon up, no controller channel configured")
        if not ch.get("connected"):
            return Health(False, f"controller channel down ({ch.get('last_error') or 'not yet connected'})")
        return Health(True)

    return probe

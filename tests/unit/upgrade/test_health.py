"""After the boot: a healthy trial commits, an unhealthy one reboots and the next boot falls back by
itself; what happened reaches the record (and so the controller). Time is the test's."""

from __future__ import annotations

import asyncio

import pytest

from nsg.upgrade.health import Health, settle
from nsg.upgrade.install import install
from nsg.upgrade.record import Phase, load_record
from nsg.upgrade.slots import State


class Clock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


class Reboots:
    def __init__(self):
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


def healthy_after(clock: Clock, at: float | None):
    async def probe() -> Health:
        if at is not None and clock.t >= at:
            return Health(True)
        return Health(False, "controller channel down (connection refused)")
    return probe


def run_settle(tbox, clock, probe, reboot, **kw):
    return asyncio.run(settle(tbox.box, probe, reboot, sleep=clock.sleep, clock=clock, wall=lambda: 1000.0 + clock.t,
                              **kw))


def trial(tbox, commit_after_s=60.0):
    install(tbox.bundle(version="1.3.0"), tbox.box, commit_after_s=commit_after_s)
    assert tbox.boot() == "b"
    tbox.release("1.3.0")


def test_a_healthy_trial_commits(tbox):
    trial(tbox)
    clock, reboot = Clock(), Reboots()
    done = run_settle(tbox, clock, healthy_after(clock, 10.0), reboot)
    assert (done.state, done.outcome) == (State.TRIAL, "committed")
    assert tbox.env().as_dict() == {"nsg_slot": "b", "nsg_try": ""}
    assert reboot.count == 0 and 10.0 <= clock.t < 60.0
    rec = load_record(tbox.box.record_path)
    assert rec.attempt.phase is Phase.COMMITTED and rec.slot_versions["b"] == "1.3.0"
    # the next boots stay on b, and a settle has nothing to do
    assert tbox.boot() == "b"
    assert run_settle(tbox, Clock(), healthy_after(clock, None), reboot).outcome == "nothing to do"


def test_an_unhealthy_trial_reboots_and_the_box_falls_back(tbox):
    trial(tbox, commit_after_s=60.0)
    clock, reboot = Clock(), Reboots()
    done = run_settle(tbox, clock, healthy_after(clock, None), reboot, poll_s=7.0)
    assert done.outcome == "rebooting" and reboot.count == 1
    assert clock.t == pytest.approx(60.0) and max(clock.sleeps) <= 7.0  # waited the window, polling
    assert tbox.env().as_dict() == {"nsg_slot": "a", "nsg_try": ""}  # never committed
    rec = load_record(tbox.box.record_path)
    assert rec.attempt.phase is Phase.UNHEALTHY
    assert "slot b was not healthy within 60 s: controller channel down" in rec.attempt.reason
    assert tbox.boot() == "a"  # what GRUB does by itself
    tbox.release("1.2.0")
    done = run_settle(tbox, Clock(), healthy_after(clock, 0.0), reboot)
    assert (done.state, done.outcome) == (State.FELL_BACK, "fell-back")
    rec = load_record(tbox.box.record_path)
    assert rec.attempt.phase is Phase.FELL_BACK and "not healthy within 60 s" in rec.attempt.reason
    assert reboot.count == 1


def test_a_trial_that_never_reaches_userspace_falls_back(tbox):
    trial(tbox)  # slot b booted ... and hung or panicked: no settle ran; the watchdog reset the box
    assert tbox.boot() == "a"
    tbox.release("1.2.0")
    done = run_settle(tbox, Clock(), healthy_after(Clock(), 0.0), Reboots())
    assert done.state is State.FELL_BACK and "never reached userspace" in done.detail


def test_a_trial_that_stops_while_waiting_falls_back(tbox):
    trial(tbox)
    clock = Clock()

    async def killed(s: float) -> None:
        raise asyncio.CancelledError  # the daemon stopped (or the power went) mid-wait

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(settle(tbox.box, healthy_after(clock, None), Reboots(), sleep=killed, clock=clock))
    assert load_record(tbox.box.record_path).attempt.phase is Phase.TRYING
    assert tbox.boot() == "a"
    done = run_settle(tbox, Clock(), healthy_after(clock, 0.0), Reboots())
    assert done.state is State.FELL_BACK and "booted but stopped" in done.detail


def test_an_unhealthy_trial_clears_a_leftover_nsg_try(tbox):
    """Should grub.cfg not have consumed nsg_try, the reboot must still go back to the old slot."""
    trial(tbox)
    env = tbox.env()
    from nsg.upgrade.grubenv import write_env
    write_env(tbox.box.grubenv, env.set("nsg_try", "b"))
    clock = Clock()
    run_settle(tbox, clock, healthy_after(clock, None), Reboots())
    assert tbox.env().get("nsg_try") == "" and tbox.boot() == "a"


def test_a_trial_the_record_does_not_know_is_judged_and_recorded(tbox):
    trial(tbox)
    tbox.box.record_path.unlink()  # e.g. a data partition replaced
    clock = Clock()
    done = run_settle(tbox, clock, healthy_after(clock, None), Reboots(), default_commit_after_s=30.0)
    assert done.outcome == "rebooting" and clock.t == pytest.approx(30.0)
    a = load_record(tbox.box.record_path).attempt
    assert (a.phase, a.target_slot, a.target_version, a.from_slot) == (Phase.UNHEALTHY, "b", "1.3.0", "a")


def test_nothing_pending_nothing_done(tbox):
    env_before = tbox.box.grubenv.read_bytes()
    done = run_settle(tbox, Clock(), healthy_after(Clock(), None), Reboots())
    assert (done.state, done.outcome) == (State.COMMITTED, "nothing to do")
    assert tbox.box.grubenv.read_bytes() == env_before

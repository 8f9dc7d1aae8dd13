"""The upgrade subsystem (nsg/subsystems/upgrade.py), the daemon's last engine part: with a fake fetch,
installer and reboot it never blocks the loop, runs once per target, never retries a refused version,
backs off a failed download and stops a run whose target went away; with the real nsg.upgrade install
against file-backed slots (conftest.py's box) it arms the slot, reboots once, and after the "boot" and
settle reports committed, fell back or refused, idempotently across restarts."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from nsg.compose import UpgradePart
from nsg.model.upgrade import UpgradeTarget
from nsg.subsystems.upgrade import UpgradeSubsystem
from nsg.upgrade.agent import AGENT_FILE, Outcome, load_tried
from nsg.upgrade.errors import DownloadError, PolicyRefused
from nsg.upgrade.health import Health, settle
from nsg.upgrade.record import load_record

from .conftest import MODEL

SHA = "ab" * 32


def target(version: str = "1.3.0", sha: str = SHA, size: int = 1000, retry: int = 0) -> UpgradeTarget:
    return UpgradeTarget(version=version, retry=retry, commit_after_s=30, bundles=[
        {"model": MODEL, "url": f"https://198.18.0.2:8444/bundles/{sha}", "sha256": sha, "size": size}])


class Fakes:
    """The subsystem's outside world: fetch, installer, reboot, the report's listener, a clock."""

    def __init__(self, tbox, *, installer=None, fetch=None):
        self.tbox = tbox
        self.fetches: list[str] = []
        self.installs: list[tuple[Path, float]] = []
        self.reboots = 0
        self.changes = 0
        self.skew = 0.0  # the agent's clock runs this far ahead of the wall clock (settle writes wall time)
        self.release_fetch = threading.Event()
        self.release_fetch.set()
        self._installer, self._fetch = installer, fetch

    def fetch(self, url, dest, *, context, expect_size, expect_sha256, progress):
        assert context is not None and expect_sha256 in url
        self.fetches.append(url)
        if self._fetch is not None:
            return self._fetch(url, dest, progress)
        while not self.release_fetch.wait(0.01):
            progress(0, 1)  # a checkpoint: a run no longer wanted stops here
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "bundle.download").write_bytes(b"x")
        return dest / "bundle.download"

    def installer(self, path, box, *, commit_after_s, progress, now):
        self.installs.append((path, commit_after_s))
        if self._installer is not None:
            return self._installer(path, box, commit_after_s=commit_after_s, progress=progress, now=now)
        return SimpleNamespace(slot="b", what="upgrade 1.2.0 -> 1.3.0")

    def reboot(self) -> None:
        self.reboots += 1

    def sub(self, *, poll_s: float = 0.02) -> UpgradeSubsystem:
        return UpgradeSubsystem(self.tbox.box.state_dir, self.tbox.box, ssl.create_default_context, self.reboot,
                                self.changed, poll_s=poll_s, reboot_report_s=5, clock=lambda: time.time() + self.skew,
                                fetch=self.fetch, installer=self.installer)

    def changed(self) -> None:
        self.changes += 1


async def until(what: str, cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.01)
    return got


def run(coro):
    return asyncio.run(coro)


def test_set_returns_at_once_and_the_run_reboots_once(tbox):
    f = Fakes(tbox)
    f.release_fetch.clear()  # the download hangs until the test lets it go

    async def go():
        sub = f.sub()
        t0 = time.monotonic()
        changes = await sub.set(UpgradePart(target()))
        assert time.monotonic() - t0 < 0.5 and changes.ops == ("upgrade target 1.3.0",)
        assert (await sub.set(UpgradePart(target()))).ops == ()  # the same part: no changes
        await until("downloading", lambda: sub.status().agent.action == "downloading")
        f.release_fetch.set()
        await until("the reboot", lambda: f.reboots == 1)
        await asyncio.sleep(0.2)  # many looks later: still one reboot, one install
        assert (f.reboots, len(f.installs), len(f.fetches)) == (1, 1, 1)
        assert f.installs[0][1] == 30  # the profile's commit window reaches the install
        st = sub.status()
        assert (st.agent.action, st.agent.target, st.running_version) == ("rebooting", "1.3.0", "1.2.0")
        assert f.changes >= 2  # each change of the report was told (the controller hears of it)
        await sub.stop()

    run(go())
    assert load_tried(tbox.box.state_dir / AGENT_FILE).outcome is Outcome.REBOOTING
    assert not (tbox.box.state_dir / "upgrade" / "bundle.download").exists()  # the download is not kept


def test_a_refused_bundle_is_held_and_never_tried_again(tbox):
    def refuse(*_a, **_kw):
        raise PolicyRefused("wrong-model", "bundle is for model nsg-other, this box is nsg-atom-x86_64")

    f = Fakes(tbox, installer=refuse)

    async def go():
        sub = f.sub()
        await sub.set(UpgradePart(target()))
        st = await until("held", lambda: (s := sub.status()).agent.action == "held" and s)
        await asyncio.sleep(0.2)
        assert len(f.installs) == 1 and f.reboots == 0
        assert "wrong-model" in st.agent.detail and "--retry" in st.agent.detail
        # a restart changes nothing: the record of the run is on the data partition
        await sub.stop()
        again = f.sub()
        await again.set(UpgradePart(target()))
        await until("held again", lambda: again.status().agent.action == "held")
        assert len(f.installs) == 1
        # the operator's retry: one more run
        await again.set(UpgradePart(target(retry=1)))
        await until("a second run", lambda: len(f.installs) == 2)
        await again.stop()

    run(go())


def test_a_failed_download_waits_and_backs_off(tbox):
    def down(url, dest, progress):
        raise DownloadError("http", f"{url}: the server answered HTTP 503 Service Unavailable")

    f = Fakes(tbox, fetch=down)

    async def go():
        sub = f.sub()
        await sub.set(UpgradePart(target()))
        st = await until("waiting", lambda: (s := sub.status()).agent.action == "retry-wait" and s)
        assert "503" in st.agent.detail and st.agent.detail.endswith(("next try in 30 s", "next try in 29 s"))
        await asyncio.sleep(0.2)
        assert len(f.fetches) == 1  # not before its time
        f.skew += 31
        await until("the second try", lambda: len(f.fetches) == 2)
        st = await until("waiting longer", lambda: (s := sub.status()).agent.detail.endswith(("in 60 s", "in 59 s"))
                         and s)
        assert st.refused == {"http": 2}  # counted in the box's record, for the controller
        await sub.stop()

    run(go())


def test_a_new_target_stops_the_run_in_progress(tbox):
    f = Fakes(tbox)
    f.release_fetch.clear()

    async def go():
        sub = f.sub()
        await sub.set(UpgradePart(target("1.3.0")))
        await until("downloading 1.3.0", lambda: sub.status().agent.action == "downloading")
        await sub.set(UpgradePart(target("1.4.0", sha="cd" * 32)))
        await until("the 1.4.0 download", lambda: len(f.fetches) == 2)
        assert "cd" * 32 in f.fetches[1] and f.installs == []
        f.release_fetch.set()
        await until("the reboot", lambda: f.reboots == 1)
        await sub.stop()

    run(go())
    t = load_tried(tbox.box.state_dir / AGENT_FILE)
    assert (t.version, t.outcome, t.unfinished) == ("1.4.0", Outcome.REBOOTING, 0)


def test_a_box_that_is_no_appliance_does_nothing(tbox):
    tbox.box.release.unlink()
    f = Fakes(tbox)

    async def go():
        sub = f.sub()
        await sub.set(UpgradePart(target()))
        st = await until("looked", lambda: (s := sub.status()).agent.action == "not-appliance" and s)
        assert not st.appliance and "release.json is missing" in st.detail
        await sub.stop()
        off = UpgradeSubsystem(tbox.box.state_dir, None, lambda: None, None, f.changed)
        await off.set(UpgradePart(target()))
        assert off.status().detail == "upgrades are off in this daemon" and off._task is None

    run(go())
    assert f.fetches == []


# --- the real install, file-backed slots -------------------------------------------------------------


def serve_bundle(path: Path):
    """A fetch that "downloads" this bundle file."""
    def fetch(url, dest, progress):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / "bundle.download")
        return dest / "bundle.download"
    return fetch


def real_target(path: Path, version: str, retry: int = 0) -> UpgradeTarget:
    import hashlib

    data = path.read_bytes()
    return target(version, sha=hashlib.sha256(data).hexdigest(), size=len(data), retry=retry)


def settle_now(tbox, healthy: bool):
    async def probe():
        return Health(healthy, "" if healthy else "controller channel down (blocked)")

    async def reboot():
        pass

    async def no_sleep(_s):
        pass

    clock = iter(range(0, 10_000, 40))  # 40 s per look: a 30 s window is over after the first
    return asyncio.run(settle(tbox.box, probe, reboot, sleep=no_sleep, clock=lambda: float(next(clock))))


def step(tbox, fakes: Fakes, goal: UpgradeTarget, done) -> object:
    """A daemon (re)start: a fresh subsystem given ``goal``, until ``done(status)``."""
    async def go():
        sub = fakes.sub()
        await sub.set(UpgradePart(goal))
        st = await until("the agent's verdict", lambda: (s := sub.status()) and done(s) and s)
        await asyncio.sleep(0.1)
        await sub.stop()
        return st

    return run(go())


def test_with_the_real_install_commit_then_fall_back_then_refused(tbox):
    from nsg.upgrade.install import install

    b13 = tbox.bundle("b13.nsgb", version="1.3.0")
    f = Fakes(tbox, installer=install, fetch=serve_bundle(b13))
    st = step(tbox, f, real_target(b13, "1.3.0"), lambda s: f.reboots == 1 and s.state == "armed")
    assert tbox.env().as_dict() == {"nsg_slot": "a", "nsg_try": "b"} and f.reboots == 1
    assert (st.last_attempt.phase, st.armed_slot, st.agent.action) == ("armed", "b", "rebooting")
    # the reboot: GRUB boots slot b once; its release says 1.3.0
    assert tbox.boot() == "b"
    tbox.release("1.3.0")
    st = step(tbox, f, real_target(b13, "1.3.0"), lambda s: s.agent.action == "trial")
    assert (st.state, st.running_version, st.booted_slot, st.committed_slot) == ("trial", "1.3.0", "b", "a")
    assert settle_now(tbox, healthy=True).outcome == "committed"
    st = step(tbox, f, real_target(b13, "1.3.0"), lambda s: s.agent.action == "up-to-date")
    assert (st.committed_version, st.committed_slot, st.outcome()) == ("1.3.0", "b", "committed")
    assert (f.reboots, len(f.installs)) == (1, 1)

    # 1.4.0: installed into slot a, its trial is not healthy, the box falls back to b by itself
    b14 = tbox.bundle("b14.nsgb", version="1.4.0")
    f._fetch = serve_bundle(b14)
    step(tbox, f, real_target(b14, "1.4.0"), lambda s: f.reboots == 2)
    assert tbox.boot() == "a"
    tbox.release("1.4.0")
    assert settle_now(tbox, healthy=False).outcome == "rebooting"
    assert tbox.boot() == "b"  # nsg_try is empty: the committed slot
    tbox.release("1.3.0")
    assert settle_now(tbox, healthy=True).outcome == "fell-back"
    st = step(tbox, f, real_target(b14, "1.4.0"), lambda s: s.agent.action == "held")
    assert st.outcome().startswith("fell back: slot a was not healthy within 30 s: controller channel down")
    assert "1.4.0 was tried here and fell back" in st.agent.detail
    assert (f.reboots, len(f.installs), st.running_version, st.committed_slot) == (2, 2, "1.3.0", "b")

    # a bundle for another model, offered as ours: the box refuses it and says why; nothing is written
    other = tbox.bundle("other.nsgb", version="1.5.0", model="nsg-aws-x86_64")
    f._fetch = serve_bundle(other)
    before = tbox.snapshot()
    st = step(tbox, f, real_target(other, "1.5.0"), lambda s: s.agent.action == "held")
    assert tbox.snapshot() == before and f.reboots == 2
    assert st.outcome().startswith("refused (wrong-model): bundle is for model nsg-aws-x86_64")
    assert st.refused == {"wrong-model": 1} and load_record(tbox.box.record_path).refused == {"wrong-model": 1}


def test_armed_before_a_restart_reboots_into_it(tbox):
    """The daemon stopped between arming the slot and the reboot: the next start reboots (once)."""
    from nsg.upgrade.install import install

    b13 = tbox.bundle("b13.nsgb", version="1.3.0")
    f = Fakes(tbox, installer=install, fetch=serve_bundle(b13))
    goal = real_target(b13, "1.3.0")
    step(tbox, f, goal, lambda s: f.reboots == 1)
    step(tbox, f, goal, lambda s: f.reboots == 2)  # still armed: the reboot is asked for again
    st = step(tbox, f, goal, lambda s: s.agent.action == "held")  # a boot loader that ignores nsg_try
    assert "2 reboots did not start it" in st.agent.detail and len(f.installs) == 1


def test_a_glance_at_the_lock_never_makes_an_install_or_a_settle_fail(tbox):
    """The agent asks every few seconds whether a writer holds the box's lock (it takes it for an
    instant); an install or settle that starts in that instant waits for it instead of failing busy."""
    import pytest

    from nsg.upgrade.errors import BoxError
    from nsg.upgrade.install import locked, writer_running

    held, release = threading.Event(), threading.Event()

    def hold(seconds: float) -> None:
        with locked(tbox.box, wait_s=0):
            held.set()
            release.wait(seconds)

    t = threading.Thread(target=hold, args=(0.3,))
    t.start()
    held.wait()
    t0 = time.monotonic()
    assert writer_running(tbox.box) and time.monotonic() - t0 < 0.1  # the question does not wait
    with locked(tbox.box):  # an install or settle waits out a short holder
        assert time.monotonic() - t0 >= 0.2
    t.join()
    held.clear()
    t = threading.Thread(target=hold, args=(10,))
    t.start()
    held.wait()
    with pytest.raises(BoxError, match="another upgrade is running"), locked(tbox.box, wait_s=0.2):
        pass
    release.set()
    t.join()
    assert not writer_running(tbox.box)


def test_the_last_report_before_the_reboot_says_armed_and_is_sent_first(tbox):
    """On a box the reboot ends the daemon: what the controller holds then is the last report sent. It must
    name the armed slot (the qemu box showed it did not: while the worker ran, the report used the facts
    read before the install), and the reboot waits until its send is done (bounded), not a fixed 2 s."""
    from nsg.upgrade.install import install

    b13 = tbox.bundle("b13.nsgb", version="1.3.0")
    f = Fakes(tbox, installer=install, fetch=serve_bundle(b13))
    sent: list = []
    at_reboot: list = []

    async def go():
        loop = asyncio.get_running_loop()
        holder: dict = {}

        def changed():
            st = holder["sub"].status()

            async def send():  # a slow channel: 2.5 s to get the report out
                await asyncio.sleep(2.5)
                sent.append(st)

            return loop.create_task(send())

        sub = UpgradeSubsystem(tbox.box.state_dir, tbox.box, ssl.create_default_context,
                               lambda: at_reboot.append(list(sent)), changed, poll_s=0.02, reboot_report_s=10,
                               fetch=f.fetch, installer=install)
        holder["sub"] = sub
        await sub.set(UpgradePart(real_target(b13, "1.3.0")))
        await until("the reboot", lambda: at_reboot, timeout=30)
        await sub.stop()

    run(go())
    last = at_reboot[0][-1]
    assert (last.agent.action, last.armed_slot, last.last_attempt.phase) == ("rebooting", "b", "armed"), last

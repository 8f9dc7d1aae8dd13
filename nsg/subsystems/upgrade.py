"""The upgrade subsystem: the last part the engine sets (nsg.compose.UpgradePart, the config's ``upgrade``
section). set() only takes the target and returns; the agent (nsg/upgrade/agent.py decides) looks at the
box in a worker thread and, when told to, runs download -> install -> reboot in a thread of its own, so
the daemon's loop never waits for a bundle. Errors are never the config's: a refused bundle, a failed
download, a box that is no appliance are reported (status(), and ``on_change`` for the controller), not
raised; the engine never rolls a config back for them.

What it touches: the box's files through nsg.upgrade (install.Box: the appliance's, or a file-backed one
for tests: `nsg run --test-upgrade-box`), downloads on the data partition, and ``reboot``: `systemctl
reboot` on an appliance, a fake in tests; None (a Daemon built without one) never reboots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nsg.compose import UpgradePart
from nsg.engine import NO_CHANGES, Changes
from nsg.model.upgrade import Action, UpgradeBundle, UpgradeState, UpgradeTarget
from nsg.upgrade import agent
from nsg.upgrade.agent import AGENT_FILE, Decision, Do, Facts, Outcome, Tried
from nsg.upgrade.errors import BoxError, DownloadError, UpgradeError

log = logging.getLogger("nsg.upgrade")

POLL_S = 10.0  # how often the box is looked at (a settle run by another process, a retry due)
REBOOT_REPORT_S = 15.0  # at most this long a reboot waits for the controller to be told of it
RETRYABLE = ("busy",)  # box errors that are not the version's fault (another upgrade holds the lock)


class _Cancelled(Exception):
    """The run is no longer wanted (another target, or the daemon stops)."""


class UpgradeSubsystem:
    name = "upgrade"

    def __init__(self, state_dir: Path, box, tls: Callable[[], ssl.SSLContext | None],
                 reboot: Callable[[], None] | None, on_change: Callable[[], Awaitable | None], *,
                 poll_s: float = POLL_S, reboot_report_s: float = REBOOT_REPORT_S,
                 clock: Callable[[], float] = time.time,
                 fetch: Callable[..., Path] | None = None, installer: Callable[..., object] | None = None):
        """``box``: nsg.upgrade.install.Box, or None: upgrades off (the report says so). ``fetch`` and
        ``installer``: nsg.upgrade.download.download and nsg.upgrade.install.install (fakes in tests).
        ``on_change`` may return an awaitable (the report's send): before a reboot the agent waits for
        it, at most ``reboot_report_s``, so the controller hears "armed, rebooting" before the box is gone."""
        from nsg.upgrade.download import download
        from nsg.upgrade.install import install

        self.state_dir, self.box, self.tls, self.reboot = state_dir, box, tls, reboot
        self.fetch, self.installer = fetch or download, installer or install
        self.on_change, self.poll_s, self.reboot_report_s, self.clock = on_change, poll_s, reboot_report_s, clock
        self._reboot_told = threading.Event()  # the rebooting report was sent (or could not be)
        self.target: UpgradeTarget | None = None
        self.state = agent.not_an_appliance("upgrades are off in this daemon" if box is None else "not looked at yet",
                                            agent.agent_report("off", None, "", None))
        self._activity: tuple[Action, str] | None = None  # what a running worker does now
        self._since: tuple[Action, str, float] | None = None
        self._worker: threading.Thread | None = None
        self._worker_key: tuple | None = None
        self._rebooting: str | None = None  # a reboot was asked for (into what): nothing more until it comes
        self._facts: Facts | str | None = None  # the box as last read
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def tried_path(self) -> Path:
        return self.state_dir / AGENT_FILE

    # --- the engine's side ----------------------------------------------------------------------

    async def set(self, part: UpgradePart) -> Changes:
        changed = part.target != self.target
        self.target = part.target
        self._start()
        if changed and self._worker_key is not None and not self._wanted(self._worker_key):
            self._cancel.set()  # the run in progress is for a target no longer wanted: it stops at its next chunk
        self._poke()
        if not changed:
            return NO_CHANGES
        return Changes((f"upgrade target {part.target.version}" if part.target else "no upgrade target",))

    def status(self) -> UpgradeState:
        return self.state

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        worker = self._worker
        if worker is not None and worker.is_alive():
            self._cancel.set()
            await asyncio.to_thread(worker.join, 10.0)

    # --- the loop: look, decide, start a run ----------------------------------------------------------

    def _start(self) -> None:
        if self._task is None and self.box is not None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="upgrade-agent")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _poke_from_thread(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is gone
                self._loop.call_soon_threadsafe(self._poke)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            wake_at = None
            try:
                wake_at = await self.look()
            except Exception:  # a fault of ours must not end the agent: logged, looked at again later
                log.exception("upgrade agent: looking at the box failed")
            timeout = self.poll_s if wake_at is None else max(0.0, min(self.poll_s, wake_at - self.clock()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation stop() sends
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def look(self) -> float | None:
        """Read the box, decide, start a run if one is due, and update the report (``on_change`` when it
        changed). Returns when to look again at the latest (a retry due), or None. The box is not read
        while a run of ours is in progress: reading takes its lock for a moment (is a writer running?),
        which would make our own install find the box busy."""
        with self._lock:
            busy = self._worker is not None and self._worker.is_alive()
        if busy and self._facts is not None:
            facts, tried = self._facts, None
        else:
            facts, tried = await asyncio.to_thread(self._read)
            self._facts = facts
        decision: Decision | None = None
        with self._lock:
            busy = self._worker is not None and self._worker.is_alive()
            if self._rebooting is not None:
                self._activity = ("rebooting", self._rebooting)
            elif not busy:
                self._worker, self._worker_key, self._activity = None, None, None
                decision = agent.decide(self.target, facts, tried, self.clock())
                if decision.do is not Do.NOTHING:
                    self._launch(decision)
            action, detail = self._activity if self._activity else (decision.action, decision.detail)  # type: ignore[union-attr]
        if self._since is None or self._since[:2] != (action, detail):
            self._since = (action, detail, self.clock())
        report = agent.agent_report(action, self.target, detail, self._since[2])
        state = agent.not_an_appliance(facts, report) if isinstance(facts, str) else agent.state_of(facts, report)
        if state != self.state:
            self.state = state
            sent = self.on_change()
            if self._rebooting is not None and sent is not None:
                with contextlib.suppress(Exception):  # a channel that is down does not hold the reboot
                    async with asyncio.timeout(self.reboot_report_s):
                        await sent
        if self._rebooting is not None:
            self._reboot_told.set()
        return decision.wake_at if decision is not None else None

    def _read(self) -> tuple[Facts | str, Tried | None]:
        from nsg.upgrade.install import upgrade_report
        from nsg.upgrade.manifest import read_release

        assert self.box is not None
        try:
            release = read_release(self.box.release)
            report = upgrade_report(self.box)
        except BoxError as exc:
            return f"not an A/B appliance: {exc}", None
        return Facts(release.model, release.version, report), agent.load_tried(self.tried_path)

    def _wanted(self, key: tuple) -> bool:
        t = self.target
        return t is not None and any(agent.key_of(t, b) == key for b in t.bundles)

    def _launch(self, decision: Decision) -> None:
        """Under the lock: a worker thread for ``decision`` (install, or reboot only)."""
        target, bundle = self.target, decision.bundle
        assert target is not None and bundle is not None
        self._cancel.clear()
        self._worker_key = agent.key_of(target, bundle)
        self._activity = (decision.action, decision.detail)
        run = self._install if decision.do is Do.INSTALL else self._reboot_only
        self._worker = threading.Thread(target=self._thread, args=(run, target, bundle), name="upgrade",
                                        daemon=True)
        self._worker.start()

    def _thread(self, run: Callable[[UpgradeTarget, UpgradeBundle], None], target: UpgradeTarget,
                bundle: UpgradeBundle) -> None:
        try:
            run(target, bundle)
        except Exception:  # a fault of ours: logged; the record says how far it got, the agent looks again
            log.exception("upgrade to %s: the run failed", target.version)
        finally:
            self._poke_from_thread()

    # --- the worker thread ------------------------------------------------------------------------

    def _doing(self, action: Action, detail: str) -> None:
        with self._lock:
            self._activity = (action, detail)
        self._poke_from_thread()

    def _checkpoint(self, *_progress: object) -> None:
        if self._cancel.is_set():
            raise _Cancelled

    def _save(self, tried: Tried) -> None:
        try:
            agent.save_tried(self.tried_path, tried)
        except OSError as exc:  # the run goes on; a restart may then try it once more
            log.error("cannot write %s: %s", self.tried_path, exc.strerror)

    def _install(self, target: UpgradeTarget, bundle: UpgradeBundle) -> None:
        from nsg.upgrade.install import count_refusal

        assert self.box is not None
        tried = agent.begin(agent.load_tried(self.tried_path), target, bundle, self.clock())
        self._save(tried)
        log.info("upgrade to %s: downloading %s", target.version, bundle.url)
        path: Path | None = None
        try:
            ctx = self.tls()
            if ctx is None:
                raise DownloadError("no-identity", "the box has no LDevID yet to fetch the bundle with")
            path = self.fetch(bundle.url, self.state_dir / "upgrade", context=ctx, expect_size=bundle.size,
                              expect_sha256=bundle.sha256, progress=self._checkpoint)
            self._doing("installing", f"{target.version} into the inactive slot")
            done = self.installer(path, self.box, commit_after_s=target.commit_after_s, progress=self._checkpoint,
                                  now=self.clock)
        except _Cancelled:
            log.info("upgrade to %s stopped: no longer wanted", target.version)
            self._save(tried.model_copy(update={"unfinished": max(0, tried.unfinished - 1)}))
            return
        except UpgradeError as exc:
            why = f"{exc} [{exc.fault}: {exc.code}]"
            if isinstance(exc, DownloadError) or exc.code in RETRYABLE:
                if isinstance(exc, DownloadError):  # install counts its own refusals
                    count_refusal(self.box, exc, self.clock())
                self._save(agent.ended(tried, Outcome.DOWNLOAD_FAILED, self.clock(), why))
                log.warning("upgrade to %s: %s; tried again later", target.version, why)
            else:
                if path is None:  # refused before install (a download that was no download)
                    count_refusal(self.box, exc, self.clock())
                self._save(agent.ended(tried, Outcome.REFUSED, self.clock(), why))
                log.error("upgrade to %s refused: %s", target.version, why)
            return
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
        tried = agent.ended(tried, Outcome.ARMED, self.clock())
        self._save(tried)
        log.info("%s: slot %s armed to boot once", done.what, done.slot)  # type: ignore[attr-defined]
        if self._cancel.is_set():
            log.info("upgrade to %s armed but no longer wanted: not rebooting", target.version)
            return
        self._reboot(tried, f"into slot {done.slot} ({target.version})")  # type: ignore[attr-defined]

    def _reboot_only(self, target: UpgradeTarget, bundle: UpgradeBundle) -> None:
        tried = agent.load_tried(self.tried_path)
        assert tried is not None  # decide() says REBOOT only for a key of ours
        self._reboot(tried, f"into the armed slot ({target.version})")

    def _reboot(self, tried: Tried, what: str) -> None:
        self._save(agent.ended(tried, Outcome.REBOOTING, self.clock()))
        # the box read again (the armed slot, the attempt's phase): while a worker runs, look() reports the
        # facts read before it, and the report sent now is the last the controller gets from this boot
        try:
            facts = self._read()[0]
        except Exception:  # the report then says less; the reboot is what matters
            log.exception("upgrade agent: reading the box before the reboot failed")
            facts = self._facts
        with self._lock:
            self._rebooting = what
            self._facts = facts
        self._reboot_told.clear()
        self._doing("rebooting", what)
        if not self._reboot_told.wait(self.reboot_report_s):
            log.warning("the rebooting report was not sent within %.0f s; rebooting anyway", self.reboot_report_s)
        if self.reboot is None:
            log.warning("a reboot %s is due; this daemon was given no way to reboot", what)
            return
        log.warning("rebooting %s", what)
        self.reboot()


def box_and_reboot(state_dir: Path, test_box: Path | None = None) -> tuple:
    """`nsg run`'s: the appliance's slots and `systemctl reboot`; with ``test_box`` (tests and labs only,
    `nsg run --test-upgrade-box DIR`) the file-backed box in DIR (nsg.upgrade.install.file_box), whose
    reboot only writes DIR/reboot-requested for whoever plays the boot loader."""
    import subprocess

    from nsg.upgrade.install import Box, file_box

    if test_box is not None:
        def fake_reboot() -> None:
            (test_box / "reboot-requested").write_text(f"{time.time()}\n")

        return file_box(test_box, state_dir), fake_reboot

    def reboot() -> None:
        subprocess.run(["systemctl", "reboot"], check=False)

    return Box(state_dir=state_dir), reboot

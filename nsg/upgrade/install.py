"""Installing a bundle into the inactive slot: the steps in order, each one safe to lose power after.

    1. read the GRUB env, the booted slot, the record: refuse during a trial (the inactive slot is then
       the committed one, the box's only way back)
    2. pass 1 over the file: signature, model and version policy, image size and SHA-256; nothing on the
       box has changed yet, so a bad or refused bundle leaves no trace but its counted refusal
    3. record the attempt (phase writing); clear nsg_try if an earlier install armed the slot we are about
       to overwrite (a power cut mid-write must never leave a half-written slot armed)
    4. pass 2: stream the image to the slot while hashing it again (the file may have changed since pass
       1), fsync, read it back from the device and hash it a third time
    5. only then set nsg_try to the slot (one in-place sector write of the GRUB env), record "armed"

A power cut anywhere before 5 boots the old slot (nsg_try is empty) and the next settle records
"interrupted"; after 5 the next boot tries the new slot once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nsg.upgrade import policy
from nsg.upgrade.bundle import Progress, load_release_keys, verify_file
from nsg.upgrade.errors import BoxError, RequestRefused, UpgradeError
from nsg.upgrade.grubenv import GrubEnv, read_env, write_env
from nsg.upgrade.manifest import Manifest, read_release
from nsg.upgrade.paths import CMDLINE, DEFAULT_COMMIT_AFTER_S, GRUBENV, KEYS_DIR, PARTLABEL_DIR, RELEASE_FILE, STATE_DIR
from nsg.upgrade.record import RECORD_NAME, Attempt, Phase, Record, load_record, save_record
from nsg.upgrade.slots import (
    TRY_VAR,
    BootView,
    UpgradeReport,
    arm,
    booted_slot,
    check_installable,
    disarm,
    report,
    settle_record,
    view,
)
from nsg.upgrade.writer import SlotWriter, slot_device

log = logging.getLogger("nsg.upgrade")



@dataclass(frozen=True)
class Box:
    """Where this box keeps what an upgrade reads and writes (tests point each at a temporary path)."""

    grubenv: Path = GRUBENV
    cmdline: Path = CMDLINE
    release: Path = RELEASE_FILE
    keys_dir: Path = KEYS_DIR
    state_dir: Path = STATE_DIR
    partlabel_dir: Path = PARTLABEL_DIR
    root: Path = Path("/")

    @property
    def record_path(self) -> Path:
        return self.state_dir / RECORD_NAME

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "upgrade.lock"


def file_box(directory: Path, state_dir: Path) -> Box:
    """A box made of files under ``directory``, for tests and labs only (`nsg run --test-upgrade-box`):
    grubenv, cmdline, release.json, release-keys/*.pem and by-partlabel/nsg-root-a|b (links to regular
    files standing in for the slot partitions); upgrade.json stays in ``state_dir``. Nothing here boots:
    whoever plays the boot loader reads grubenv and rewrites cmdline and release.json."""
    return Box(grubenv=directory / "grubenv", cmdline=directory / "cmdline", release=directory / "release.json",
               keys_dir=directory / "release-keys", state_dir=state_dir, partlabel_dir=directory / "by-partlabel",
               root=directory)


@dataclass(frozen=True)
class Installed:
    manifest: Manifest
    key_id: str
    key_file: str
    slot: str
    device: Path
    what: str  # "upgrade 1.2.0 -> 1.3.0"


@contextlib.contextmanager
def locked(box: Box, wait_s: float = 2.0) -> Iterator[None]:
    """One upgrade or settle at a time (flock: released by the kernel when the holder dies). A holder is
    waited for ``wait_s``: a reader asking whether a writer runs (writer_running, e.g. the daemon's
    upgrade agent every few seconds) holds it for an instant and must not make an install or a settle fail."""
    try:
        box.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(box.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BoxError("io", f"cannot open {box.lock_path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BoxError("busy", f"another upgrade is running (it holds {box.lock_path})") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def writer_running(box: Box) -> bool:
    """Whether some process holds the upgrade lock now (a write in progress is not an interrupted one)."""
    try:
        with locked(box, wait_s=0):
            return False
    except BoxError as exc:
        return exc.code == "busy"


def current(box: Box, *, holding_lock: bool = False) -> tuple[GrubEnv, BootView, Record]:
    env = read_env(box.grubenv)
    try:
        cmdline = box.cmdline.read_text()
    except OSError as exc:
        raise BoxError("no-booted-slot", f"cannot read {box.cmdline}: {exc.strerror}") from None
    record = load_record(box.record_path)
    running = False if holding_lock else writer_running(box)
    return env, view(env, booted_slot(cmdline), record.attempt, writer_running=running), record


def upgrade_report(box: Box) -> UpgradeReport:
    """The slots, the last attempt and the refusals: `nsg upgrade status --json`, and what the controller
    is to be sent (nsg.upgrade.slots.UpgradeReport)."""
    _env, v, record = current(box)
    try:
        running: str | None = read_release(box.release).version
    except BoxError:
        running = None
    return report(v, record, running)


def count_refusal(box: Box, exc: UpgradeError, now: float) -> None:
    try:
        save_record(box.record_path, load_record(box.record_path).with_refusal(exc, now))
    except BoxError as save_exc:  # the refusal itself is what the caller reports
        log.warning("could not count the refusal %s: %s", exc.code, save_exc)


def install(bundle: Path, box: Box, *, allow_downgrade: bool = False,
            commit_after_s: float = DEFAULT_COMMIT_AFTER_S, progress: Callable[[str, int, int], None] | None = None,
            now: Callable[[], float] = time.time) -> Installed:
    """Verify ``bundle`` and write it to the inactive slot, armed to boot once. Raises UpgradeError
    (counted in the record by code) with nothing armed."""
    if commit_after_s <= 0:
        raise RequestRefused("bad-request", "--commit-after must be positive")
    with locked(box):
        try:
            return _install(bundle, box, allow_downgrade, commit_after_s, progress, now)
        except UpgradeError as exc:
            count_refusal(box, exc, now())
            raise


def _stage(progress: Callable[[str, int, int], None] | None, stage: str) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def _install(bundle: Path, box: Box, allow_downgrade: bool, commit_after_s: float,
             progress: Callable[[str, int, int], None] | None, now: Callable[[], float]) -> Installed:
    env, v, record = current(box, holding_lock=True)
    settled = settle_record(v, record.attempt, now())  # the last attempt's outcome, if not yet recorded
    if settled is not None:
        record = record.with_attempt(settled)
        save_record(box.record_path, record)
    check_installable(v)
    running = read_release(box.release)
    keys = load_release_keys(box.keys_dir)
    what: list[str] = []
    verified = verify_file(bundle, keys, progress=_stage(progress, "verify"),
                           check=lambda m: what.append(policy.check(m, running, allow_downgrade=allow_downgrade)))
    m = verified.manifest
    target = v.inactive
    device = slot_device(target, box.partlabel_dir, root=box.root)

    t = now()
    attempt = Attempt(from_slot=v.booted, from_version=running.version, target_slot=target, target_version=m.version,
                      build=m.build, key_id=verified.key.key_id, phase=Phase.WRITING, started=t, updated=t,
                      commit_after_s=commit_after_s)
    record = record.with_attempt(attempt, **{target: None})
    save_record(box.record_path, record)
    try:
        if env.get(TRY_VAR):
            write_env(box.grubenv, disarm(env))
        writer = SlotWriter(device, m.rootfs.size, target)
        try:
            verify_file(bundle, keys, expect=m, sink=writer.write, progress=_stage(progress, "write"))
            writer.finish(m.rootfs.sha256)
        finally:
            writer.close()
        env = read_env(box.grubenv)
        write_env(box.grubenv, arm(env, view(env, v.booted, attempt, writer_running=True)))
    except UpgradeError as exc:
        failed = attempt.model_copy(update={"phase": Phase.FAILED, "updated": now(), "reason": exc.message[:2000]})
        save_record(box.record_path, record.with_attempt(failed))
        raise
    armed = attempt.model_copy(update={"phase": Phase.ARMED, "updated": now()})
    save_record(box.record_path, record.with_attempt(armed, **{target: m.version}))
    log.info("slot %s (%s) holds %s, armed to boot once", target, device, m.version)
    return Installed(manifest=m, key_id=verified.key.key_id, key_file=verified.key.path.name, slot=target,
                     device=device, what=what[0])

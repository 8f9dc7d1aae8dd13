"""A power cut while the slot is written (the writer process SIGKILLed mid-way, at the file level):
the GRUB env still boots the old slot, the next settle records the attempt as interrupted, and a new
install works. Also when an earlier install had armed the very slot being rewritten."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nsg.upgrade.health import Health, settle
from nsg.upgrade.install import current, install
from nsg.upgrade.record import Phase, load_record
from nsg.upgrade.slots import State

from .conftest import fake_ext4

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from nsg.upgrade import bundle, writer
    from nsg.upgrade.install import Box, install

    bundle.CHUNK = 4096  # many writes, so that the kill lands in the middle
    real = writer.SlotWriter.write
    def write(self, chunk):
        real(self, chunk)
        if self.written >= 3 * 4096:
            print("mid-write", self.written, flush=True)
            time.sleep(60)  # the parent kills us here
    writer.SlotWriter.write = write
    box = Box(**{k: Path(v) for k, v in json.loads(sys.argv[1]).items()})
    install(Path(sys.argv[2]), box)
    print("finished", flush=True)
""")


def kill_mid_write(tbox, bundle: Path) -> None:
    paths = {k: str(getattr(tbox.box, k)) for k in ("grubenv", "cmdline", "release", "keys_dir", "state_dir",
                                                    "partlabel_dir")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(paths), str(bundle)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mid-write"), (line, proc.stderr.read() if proc.poll() is not None else "")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("armed_before", [False, True])
def test_a_power_cut_while_writing_still_boots_the_old_slot(tbox, armed_before):
    if armed_before:
        install(tbox.bundle(version="1.2.5"), tbox.box)
        assert tbox.env().get("nsg_try") == "b"
    env_before = tbox.env().set("nsg_try", "")
    bundle = tbox.bundle("c.nsgb", version="1.3.0")
    kill_mid_write(tbox, bundle)

    img = fake_ext4(seed=b"1.3.0")
    b = tbox.slot_b.read_bytes()
    assert b[:3 * 4096] == img[:3 * 4096] and b[:len(img)] != img  # a half-written slot b ...
    assert tbox.env() == env_before  # ... that nothing boots: nsg_slot=a, nsg_try empty
    assert tbox.env().as_dict() == {"nsg_slot": "a", "nsg_try": ""}
    rec = load_record(tbox.box.record_path)
    assert rec.attempt.phase is Phase.WRITING and rec.slot_versions["b"] is None

    assert tbox.boot() == "a"  # the reset after the power cut
    _env, v, _rec = current(tbox.box)
    assert v.state is State.INTERRUPTED

    async def probe() -> Health:
        return Health(True)

    async def reboot() -> None:
        raise AssertionError("no reboot for an interrupted write")

    done = asyncio.run(settle(tbox.box, probe, reboot))
    assert (done.state, done.outcome) == (State.INTERRUPTED, "interrupted")
    assert "stopped part way" in load_record(tbox.box.record_path).attempt.reason

    install(bundle, tbox.box)  # and the box can try again
    assert tbox.slot_b.read_bytes()[:len(img)] == img and tbox.env().get("nsg_try") == "b"


def test_a_running_writer_is_not_an_interrupted_one(tbox):
    """While the lock is held, status must not call the write interrupted (nor may a second install start)."""
    from nsg.upgrade.errors import BoxError
    from nsg.upgrade.install import locked
    from nsg.upgrade.record import Attempt, Record, save_record

    save_record(tbox.box.record_path, Record(attempt=Attempt(
        from_slot="a", from_version="1.2.0", target_slot="b", target_version="1.3.0", phase=Phase.WRITING,
        started=1.0, updated=1.0, commit_after_s=300)))
    assert current(tbox.box)[1].state is State.INTERRUPTED
    with locked(tbox.box):
        assert current(tbox.box)[1].state is State.COMMITTED
        with pytest.raises(BoxError, match=r"another upgrade is running"):
            install(tbox.bundle(), tbox.box)

"""GRUB's environment block: the codec against GRUB's own grub-editenv, refusals, the in-place write."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from nsg.upgrade.grubenv import (
    BLOCK_SIZE,
    SIGNATURE,
    GrubEnv,
    GrubEnvError,
    changed_sectors,
    create_env,
    read_env,
    write_env,
)
from tests.peers import require_peer

GRUB_EDITENV = shutil.which("grub-editenv")  # Debian package grub-common
# GRUB's own tool is the independent implementation: missing locally skips, under CI=true fails
needs_grub = require_peer([] if GRUB_EDITENV else ["grub-editenv (Debian package grub-common)"])

EDITS = [
    [("set", "nsg_slot", "a"), ("set", "nsg_try", "")],
    [("set", "nsg_slot", "a"), ("set", "nsg_try", "b"), ("set", "nsg_try", ""), ("set", "nsg_slot", "b")],
    [("set", "nsg_slot", "a"), ("set", "nsg_try", "b"), ("unset", "nsg_slot"), ("set", "nsg_slot", "b")],
    [("set", "x", "back\\slash"), ("set", "y", "two\nlines"), ("set", "z", "a=b c#d")],
]


def _apply(env: GrubEnv, edits) -> GrubEnv:
    for op, name, *value in edits:
        env = env.set(name, value[0]) if op == "set" else env.unset(name)
    return env


def _editenv(path, *args: str) -> None:
    subprocess.run([GRUB_EDITENV, str(path), *args], check=True, capture_output=True)


@needs_grub
@pytest.mark.parametrize("edits", EDITS)
def test_the_same_edits_give_grub_editenvs_bytes(tmp_path, edits):
    path = tmp_path / "grubenv"
    _editenv(path, "create")
    for op, name, *value in edits:
        _editenv(path, *(["set", f"{name}={value[0]}"] if op == "set" else ["unset", name]))
    ours = _apply(GrubEnv(), edits).to_bytes()
    assert ours == path.read_bytes()
    # and GRUB reads ours back as we meant it
    path.write_bytes(ours)
    listed = subprocess.run([GRUB_EDITENV, str(path), "list"], check=True, capture_output=True, text=True).stdout
    assert listed == "".join(f"{k}={v}\n" for k, v in GrubEnv.parse(ours).as_dict().items())


@needs_grub
def test_grub_editenv_reads_what_write_env_wrote_in_place(tmp_path):
    path = tmp_path / "grubenv"
    create_env(path, GrubEnv().set("nsg_slot", "a").set("nsg_try", ""))
    write_env(path, read_env(path).set("nsg_try", "b"))
    listed = subprocess.run([GRUB_EDITENV, str(path), "list"], check=True, capture_output=True, text=True).stdout
    assert listed == "nsg_slot=a\nnsg_try=b\n"


@pytest.mark.parametrize("edits", EDITS)
def test_round_trip(edits):
    env = _apply(GrubEnv(), edits)
    block = env.to_bytes()
    assert len(block) == BLOCK_SIZE and block.startswith(SIGNATURE)
    assert GrubEnv.parse(block) == env
    assert GrubEnv.parse(block).to_bytes() == block


def test_reads_the_image_builders_block_without_the_warning_line():
    block = SIGNATURE + b"nsg_slot=a\nnsg_try=\n"
    block += b"#" * (BLOCK_SIZE - len(block))
    env = GrubEnv.parse(block)
    assert env.as_dict() == {"nsg_slot": "a", "nsg_try": ""}
    assert env.get("nsg_try") == "" and env.set("nsg_try", "b").to_bytes() == block.replace(b"try=\n#", b"try=b\n")


def _block(text: bytes) -> bytes:
    return text + b"#" * (BLOCK_SIZE - len(text))


@pytest.mark.parametrize(("block", "why"), [
    (_block(SIGNATURE)[:-1], "is 1023 bytes"),
    (_block(SIGNATURE) + b"#", "is 1025 bytes"),
    (_block(b"# GRUB Environment Blok\n"), "does not start with"),
    (_block(SIGNATURE + b"nsg_slot=a\n")[:-3] + b"x##", "stray bytes in the padding"),
    (_block(SIGNATURE + b"nsg_slot\n"), "neither a comment nor name=value"),
    (_block(SIGNATURE + b"=a\n"), "without a name"),
    (_block(SIGNATURE + b"nsg_slot=a\nnsg_slot=b\n"), "appears twice"),
    (SIGNATURE + b"nsg_slot=" + b"a" * (BLOCK_SIZE - len(SIGNATURE) - 9), "does not end before the block"),
    (_block(SIGNATURE + b"nsg_slot=a\0\n"), "NUL"),
    (_block(SIGNATURE + b"nsg_slot=\xff\n"), "not UTF-8"),
])
def test_refuses_what_is_not_a_grub_block_saying_why(block, why):
    with pytest.raises(GrubEnvError, match=why):
        GrubEnv.parse(block, "grubenv")


def test_too_many_variables_for_the_block():
    with pytest.raises(GrubEnvError, match=r"need"):
        GrubEnv().set("x", "y" * BLOCK_SIZE).to_bytes()


def test_names_are_grub_variable_names():
    with pytest.raises(ValueError, match=r"letters"):
        GrubEnv().set("nsg-slot", "a")


def test_write_env_is_in_place_one_sector_and_fsynced(tmp_path, monkeypatch):
    path = tmp_path / "grubenv"
    create_env(path, GrubEnv().set("nsg_slot", "a").set("nsg_try", ""))
    ino = path.stat().st_ino
    writes, syncs = [], []
    real_pwrite, real_fsync = os.pwrite, os.fsync
    monkeypatch.setattr(os, "pwrite",
                        lambda fd, data, off: writes.append((off, len(data))) or real_pwrite(fd, data, off))
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    write_env(path, read_env(path).set("nsg_try", "b"))
    assert path.stat().st_ino == ino  # the same file (FAT: the same clusters), not a renamed copy
    assert writes == [(0, 512)] and syncs
    assert read_env(path).get("nsg_try") == "b"
    assert not list(tmp_path.glob(".*"))  # no temporary file


def test_write_env_refuses_a_change_that_spans_two_sectors(tmp_path):
    path = tmp_path / "grubenv"
    env = GrubEnv().set("pad", "p" * 380).set("nsg_slot", "a")
    create_env(path, env)
    before = path.read_bytes()
    grown = env.set("nsg_slot", "a" * 40)  # pushes the text over byte 512
    assert changed_sectors(before, grown.to_bytes()) == [0, 1]
    with pytest.raises(GrubEnvError, match=r"spans 2 sectors"):
        write_env(path, grown)
    assert path.read_bytes() == before


def test_write_env_never_overwrites_a_block_it_does_not_understand(tmp_path):
    path = tmp_path / "grubenv"
    path.write_bytes(b"\0" * BLOCK_SIZE)
    with pytest.raises(GrubEnvError, match=r"does not start with"):
        write_env(path, GrubEnv().set("nsg_slot", "a"))
    assert path.read_bytes() == b"\0" * BLOCK_SIZE


def test_missing_block_is_named(tmp_path):
    with pytest.raises(GrubEnvError, match=r"no GRUB environment block at"):
        read_env(tmp_path / "grubenv")
    create_env(tmp_path / "grubenv")
    with pytest.raises(GrubEnvError, match=r"exists"):
        create_env(tmp_path / "grubenv")

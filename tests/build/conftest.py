"""The Buildroot release tree the buildroot-configs/ checks run against, unpacked once per session.

The tarball is ``NSG_BUILDROOT_TARBALL`` or the shared snapshot below (CI runs a fresh clone on the same
machine, so the absolute default holds there too). Missing: a skip locally, a failure under CI=true.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.peers import under_ci

REPO = Path(__file__).resolve().parents[2]
EXTERNAL = REPO / "buildroot-configs"
DEFCONFIG = EXTERNAL / "configs" / "nsg_atom_defconfig"
BOARD = EXTERNAL / "board" / "nsg-atom"
DEFAULT_TARBALL = Path("/work/shared/tools/buildroot-2026.02.3.tar.xz")

LINE_SET = re.compile(r"^(BR2_\w+)=(.*)$")
LINE_UNSET = re.compile(r"^# (BR2_\w+) is not set$")


def parse_config(path: Path) -> dict[str, str | None]:
    """SYMBOL -> value as written ('y', '"string"', ...), None for '# SYMBOL is not set'."""
    out: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        if m := LINE_SET.match(line):
            out[m[1]] = m[2]
        elif m := LINE_UNSET.match(line):
            out[m[1]] = None
    return out


def expand(value: str) -> list[Path]:
    """A quoted path list as Buildroot expands it: $(BR2_EXTERNAL_NSG_PATH) is this tree."""
    text = value.strip('"').replace("$(BR2_EXTERNAL_NSG_PATH)", str(EXTERNAL))
    assert "$(" not in text, f"{value}: a make variable the test does not know"
    return [Path(p) for p in text.split()]


def clean_env(**extra: str) -> dict[str, str]:
    """What Buildroot's make sees: no MAKEFLAGS/MAKELEVEL from an outer `make test`, no CC, CFLAGS, O,
    BR2_EXTERNAL or locale surprises from the developer's shell."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "LC_ALL": "C", "TERM": "dumb"}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def buildroot_tree(tmp_path_factory) -> Path:
    tarball = Path(os.environ.get("NSG_BUILDROOT_TARBALL") or DEFAULT_TARBALL)
    if not tarball.is_file():
        why = f"Buildroot tarball {tarball} not found (set NSG_BUILDROOT_TARBALL)"
        if under_ci():
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    dest = tmp_path_factory.mktemp("buildroot")
    subprocess.run(["tar", "-xJf", str(tarball), "-C", str(dest)], check=True)
    tops = [p for p in dest.iterdir() if (p / "Makefile").is_file() and (p / "utils" / "check-package").is_file()]
    assert len(tops) == 1, f"{tarball}: expected one Buildroot top directory, found {[p.name for p in dest.iterdir()]}"
    return tops[0]


def br_make(tree: Path, out: Path, *targets: str, **variables: str) -> subprocess.CompletedProcess:
    """`make -C <tree> O=<out> targets...`; output captured, failure raises with it."""
    argv = ["make", "-C", str(tree), f"O={out}", *(f"{k}={v}" for k, v in variables.items()), *targets]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def configured(buildroot_tree, tmp_path_factory) -> tuple[Path, str]:
    """(output dir holding the .config of nsg_atom_defconfig, kconfig's messages while resolving it).

    The first run also builds kconfig's `conf` with the host compiler; the messages come from a second
    run, so they are kconfig's own (recursive dependencies, unmet dependencies of a select)."""
    out = tmp_path_factory.mktemp("br-out")
    br_make(buildroot_tree, out, "nsg_atom_defconfig", BR2_EXTERNAL=str(EXTERNAL))
    again = br_make(buildroot_tree, out, "nsg_atom_defconfig", BR2_EXTERNAL=str(EXTERNAL))
    return out, again.stdout + again.stderr

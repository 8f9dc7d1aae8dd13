"""nsg-lab's command line: a lab that is not up is an error, the help names --name, and a second
`make demo` says how the README tears the demo down."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.netns import LabError
from tests.conftest import unique_name


def nsg_lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_status_of_a_lab_that_is_not_up_fails():
    name = unique_name()
    r = nsg_lab("status", "--name", name)
    assert r.returncode != 0 and f"lab {name}: not up" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = nsg_lab("status", "--json", "--name", name)
    assert r.returncode != 0


def test_help_names_the_lab_option():
    r = nsg_lab("--help")
    assert r.returncode == 0
    assert "--name" in r.stdout, r.stdout
    # given before the command, it works too
    r = nsg_lab("--name", unique_name(), "status")
    assert r.returncode == 1 and "not up" in r.stderr


def test_second_demo_points_at_make_demo_down(monkeypatch):
    from lab import demo
    from lab.lab import Lab

    monkeypatch.setattr(Lab, "namespaces", lambda self: [f"{self.name}-inet"])
    with pytest.raises(LabError) as exc:
        demo.up("demo")
    assert "make demo-down" in str(exc.value), str(exc.value)
    # another lab name has no make target: then nsg-lab down is the way
    with pytest.raises(LabError) as exc:
        demo.up("other")
    assert "nsg-lab down --name other" in str(exc.value)

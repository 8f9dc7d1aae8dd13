"""Shared fixtures. Namespaces and labs carry a per-run prefix and are removed also on failure."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest
from hypothesis import settings

from tests import peers

# CI replays the same pseudo-random examples every run (a red run must be reproducible); developers'
# runs keep exploring new ones, which is where the fuzz tests find bugs.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

RUN_ID = secrets.token_hex(2)  # per pytest run; labs are "t<run><n>"
_counter = iter(range(1000))


def is_root() -> bool:
    return os.geteuid() == 0


def pytest_configure(config):
    config.addinivalue_line("markers", f"{peers.MARKER}(reason): a peer the test needs is missing under CI "
                                       "(tests/peers.py require_peer): the test fails at setup")


def pytest_collection_modifyitems(config, items):
    if is_root():
        return
    # a skip locally, a failure under CI=true (tests/peers.py)
    mark = peers.require_root("network namespaces")
    for item in items:
        if "tests/netns" in str(item.fspath) or "tests/e2e" in str(item.fspath):
            item.add_marker(mark)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """require_peer under CI=true: fail before any fixture starts a daemon that cannot run."""
    mark = item.get_closest_marker(peers.MARKER)
    if mark is not None:
        pytest.fail(mark.kwargs.get("reason", "a peer is missing"), pytrace=False)


def unique_name(kind: str = "t") -> str:
    return f"{kind}{RUN_ID}{next(_counter)}"


@pytest.fixture
def netns_name():
    """A bare network namespace, removed afterwards with anything running in it."""
    from lab import netns

    name = unique_name("k")
    netns.add_namespace(name)
    try:
        yield name
    finally:
        netns.kill_namespace_processes(name)
        netns.delete_namespace(name)


@pytest.fixture
def make_lab():
    """make_lab(topology) -> (Lab, Plan); every lab made is torn down at the end."""
    from lab import topology
    from lab.lab import Lab

    made = []

    def _make(topo_name: str):
        lab = Lab(unique_name())
        made.append(lab)
        plan = lab.up(topology.load(topo_name))
        return lab, plan

    yield _make
    for lab in made:
        lab.down()


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def appliance_image():
    """The appliance image (tests/e2e/appliance/image.py): built once per run, shared by every qemu test."""
    from tests.e2e.appliance import image

    return image.get()

"""What the peer harnesses need on this machine, and how a test module asks for it.

Each harness (tests/interop/strongswan.py, frr.py, gobgp.py, tests/docker_engine.py, tests/vm_guest.py)
has ``missing() -> list[str]``: one line per absent binary, plugin or file, naming the path and the Debian
package that ships it (all of them are in deps/apt-packages.txt). A test module turns that into a mark:

    pytestmark = [require_root("network namespaces"), require_peer(frr.missing())]

Locally a missing peer (or not being root) skips with that message. Under CI (``CI=true``) it fails:
a peer missing there is a setup fault (a package not in deps/apt-packages.txt), never a green skip.
The failure happens before any fixture runs, so nothing waits for a daemon that cannot start.

``python -m tests.peers`` prints the same check for every peer and tool (``make fresh-check`` runs it
in a clean Debian 12 root); it exits 1 when anything is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable

import pytest

MARKER = "peer_missing"  # registered in tests/conftest.py; its setup hook turns it into a failure


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_peer(missing: Iterable[str]) -> pytest.MarkDecorator:
    """A mark for ``pytestmark``: nothing when ``missing`` is empty, else skip (locally) or fail (CI=true)."""
    missing = [m for m in missing if m]
    if not missing:
        return pytest.mark.skipif(False, reason="all present")
    what = "; ".join(missing)
    if under_ci():
        return getattr(pytest.mark, MARKER)(reason=f"CI=true and a peer is missing: {what} "
                                                   "(every package a test needs belongs in deps/apt-packages.txt)")
    return pytest.mark.skip(reason=f"missing: {what}")


def require_root(why: str = "network namespaces") -> pytest.MarkDecorator:
    """Skip when not root, except under CI (CI runs as root; a non-root CI run is a fault)."""
    if os.geteuid() == 0:
        return pytest.mark.skipif(False, reason="root")
    what = f"needs root ({why}); `make test` runs as root"
    if under_ci():
        return getattr(pytest.mark, MARKER)(reason=f"CI=true and not root: {what}")
    return pytest.mark.skip(reason=what)


def missing_commands(commands: dict[str, str]) -> list[str]:
    """``{command: Debian package}`` -> the lines for the commands not on PATH (nor in /usr/sbin, /sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [f"{cmd} not found (Debian package {pkg})" for cmd, pkg in commands.items()
            if shutil.which(cmd, path=path) is None]


# Tools the lab, the daemon and the tests run besides the peers (package: deps/apt-packages.txt).
TOOLS = {
    "ip": "iproute2", "bridge": "iproute2", "tc": "iproute2", "ping": "iputils-ping", "nft": "nftables",
    "tcpdump": "tcpdump", "dnsmasq": "dnsmasq-base", "iperf3": "iperf3", "avahi-daemon": "avahi-daemon",
    "avahi-browse": "avahi-utils", "busybox": "busybox-static", "curl": "curl", "openssl": "openssl",
}


def report() -> dict[str, list[str]]:
    """Every peer's and tool's missing pieces (empty lists when present)."""
    from tests import docker_engine, vm_guest
    from tests.interop import frr, gobgp, strongswan

    return {
        "strongSwan (charon + plugins)": strongswan.missing(),
        "FRR (zebra, bgpd, vtysh)": frr.missing(),
        "GoBGP (gobgpd, gobgp)": gobgp.missing(),
        "Docker engine (dockerd, busybox)": docker_engine.missing(),
        "VM guest (qemu, kernel, busybox)": vm_guest.missing(),
        "tools": missing_commands(TOOLS),
    }


def main() -> int:
    bad = 0
    for name, missing in report().items():
        print(f"{'MISSING' if missing else 'ok':8} {name}")
        for line in missing:
            print(f"         - {line}")
        bad += len(missing)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The tiny VM guest (tests/vm_guest.py) boots under qemu TCG inside a namespace, takes its network from
the kernel command line and answers on a Linux bridge through a persistent TAP device."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import vm_guest
from tests.conftest import sh, unique_name
from tests.interop.procs import stop_process
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("network namespaces, TAP devices"),
    require_peer(vm_guest.missing()),
]

BRIDGE_IP = "198.18.90.1"
GUEST_IP = "198.18.90.2"
GUEST_MTU = 1400
BOOT_TIMEOUT = 60.0
# A plain socket (no proxy settings apply) fetching the guest's busybox httpd page.
HTTP_GET = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
print(data.decode(errors="replace"))
"""


@pytest.fixture(scope="session")
def guest_images(tmp_path_factory):
    kernel = vm_guest.guest_kernel()
    return kernel, vm_guest.build_initramfs(tmp_path_factory.mktemp("vm-guest"), kernel)


def wait_ready(proc: subprocess.Popen, console: Path, qemu_log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = console.read_text(errors="replace") if console.exists() else ""
        if vm_guest.READY in text:
            return text
        failed = "NSG-GUEST-ERROR network" in text
        if failed or proc.poll() is not None or time.monotonic() > deadline:
            why = (f"qemu exited ({proc.returncode})" if proc.returncode is not None
                   else "the guest could not configure eth0" if failed else f"no {vm_guest.READY}")
            qemu_out = qemu_log.read_text(errors="replace") if qemu_log.exists() else ""
            pytest.fail(f"guest not ready after {time.monotonic() - deadline + timeout:.1f}s: {why}\n"
                        f"console:\n{text[-3000:]}\nqemu:\n{qemu_out[-2000:]}")
        time.sleep(0.05)


def test_guest_boots_and_answers_on_the_bridge(netns_name, guest_images, tmp_path):
    ns, (kernel, initrd) = netns_name, guest_images
    tap = unique_name("vt")
    sh("ip", "-n", ns, "link", "add", "name", "br0", "type", "bridge")
    sh("ip", "-n", ns, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
    sh("ip", "-n", ns, "link", "set", "br0", "up")
    sh("ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
    sh("ip", "-n", ns, "link", "set", tap, "master", "br0", "up")
    console, qemu_log = tmp_path / "console.log", tmp_path / "qemu.log"
    argv = vm_guest.qemu_argv(kernel, initrd, tap=tap, mac="52:54:00:5a:90:02", ip=f"{GUEST_IP}/24",
                              gw=BRIDGE_IP, mtu=GUEST_MTU, console_log=console)
    proc = None
    try:
        t0 = time.monotonic()
        with open(qemu_log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        text = wait_ready(proc, console, qemu_log, BOOT_TIMEOUT)
        boot = time.monotonic() - t0
        print(f"guest boot-to-READY {boot:.2f}s ({kernel.name}, {initrd.stat().st_size} bytes initramfs)")
        assert f"{vm_guest.READY} {GUEST_IP}" in text
        assert f"NSG-GUEST-NET eth0 {GUEST_IP}/24 mtu {GUEST_MTU} gw {BRIDGE_IP}" in text
        assert "NSG-GUEST-ERROR" not in text

        ping = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", GUEST_IP],
                              capture_output=True, text=True, check=False)
        print(ping.stdout.strip().splitlines()[-2:])
        assert "5 packets transmitted, 5 received" in ping.stdout, ping.stdout + ping.stderr

        page = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", HTTP_GET, GUEST_IP,
                               str(vm_guest.HTTP_PORT)], capture_output=True, text=True, check=False, timeout=20)
        assert page.stdout.startswith("HTTP/1.") and " 200 " in page.stdout.splitlines()[0], page.stdout + page.stderr
        assert page.stdout.rstrip().endswith(f"nsg-guest {GUEST_IP}"), page.stdout
    finally:
        if proc is not None:
            stop_process(proc)
        sh("ip", "-n", ns, "link", "del", tap, check=False)

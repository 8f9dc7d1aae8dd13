"""The daemon runs the config's VM: qemu (TCG) on a TAP of the subnet's bridge, the guest (Debian's
kernel + a busybox initramfs, tests/vm_guest.py) brings eth0 up with the address from its kernel
command line, and a LAN host pings it. Drift: qemu killed -> started again and pinging; its TAP
deleted -> restarted; the daemon restarted -> the running VM is adopted, not restarted; the VM
leaves the config -> qemu stopped and its TAP gone. Times are measured and printed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from lab import netns
from tests import vm_guest
from tests.conftest import sh, unique_name
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_peer, require_root

pytestmark = [require_root("namespaces, TAP devices"), require_peer(vm_guest.missing())]

VM_IP = "198.19.0.70"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    try:
        kernel = vm_guest.guest_kernel()
    except vm_guest.GuestError as exc:
        pytest.fail(str(exc))  # make test installs the kernel: its absence is a setup fault, not a skip
    initrd = vm_guest.build_initramfs(tmp_path_factory.mktemp("guest"), kernel)
    return kernel, initrd


def config(kernel: Path, initrd: Path, vms: bool = True) -> dict:
    vm = {"name": "vm1", "subnet": "corp", "address": VM_IP, "accel": "tcg", "memory_mb": 192,
          "append": "quiet cryptomgr.notests",  # a quiet console boots ~1 s faster under TCG
          "kernel": {"url": f"file://{kernel}", "sha256": sha256(kernel)},
          "initrd": {"url": f"file://{initrd}", "sha256": sha256(initrd)}}
    return {"schema_version": 1, "system_ip": "198.19.255.1",
            "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                         "gateway": "198.18.1.1"}],
            "subnets": [{"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                         "ports": ["lan0"]}],
            "vms": [vm] if vms else []}


def vm(st: dict) -> dict:
    return ((st.get("vms") or {}).get("vms") or [{}])[0]


def wait_ready(console: Path, timeout: float = 90) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = console.read_text(errors="replace") if console.exists() else ""
        if vm_guest.READY in text:
            return time.monotonic() - t0
        assert "NSG-GUEST-ERROR" not in text, text[-2000:]
        time.sleep(0.2)
    raise AssertionError(f"guest not ready in {timeout}s; console:\n{console.read_text(errors='replace')[-2000:]}")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ping(host: str) -> str:
    return sh("ip", "netns", "exec", host, "ping", "-c", "3", "-i", "0.3", "-W", "2", VM_IP, check=False)


def test_daemon_runs_repairs_adopts_and_removes_a_vm(netns_name, guest, tmp_path):
    ns, host = netns_name, unique_name("h")
    kernel, initrd = guest
    netns.add_namespace(host)
    state = tmp_path / "state"
    console = state / "vms" / "vm1.console"
    try:
        sh("ip", "-n", ns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p")
        sh("ip", "link", "add", "name", "lan0", "netns", ns, "type", "veth", "peer", "name", "eth0", "netns", host)
        sh("ip", "-n", host, "addr", "add", "198.19.0.60/24", "dev", "eth0")
        sh("ip", "-n", host, "link", "set", "eth0", "up")
        (tmp_path / "gw.json").write_text(json.dumps(config(kernel, initrd)))
        d = NsgProcess(ns, tmp_path / "gw.json", state)
        try:
            t0 = time.monotonic()
            st = d.wait(lambda s: vm(s).get("state") == "running" and vm(s).get("attached"), timeout=30,
                        what="the VM running with its TAP on the bridge")
            boot = wait_ready(console)
            print(f"VM running {time.monotonic() - t0 - boot:.2f}s after the daemon started, guest ready "
                  f"{time.monotonic() - t0:.1f}s after it started; status {vm(st)}")
            tap, pid = vm(st)["tap"], vm(st)["pid"]
            link = json.loads(sh("ip", "-n", ns, "-j", "-d", "link", "show", tap))[0]
            assert link["master"] == "br-100" and link["mtu"] == 1388 and "UP" in link["flags"]
            out = ping(host)
            assert " 0% packet loss" in out, out
            # the guest's NIC has the VM's stable MAC, learned on the TAP port (what EVPN announces)
            fdb = sh("bridge", "-n", ns, "fdb", "show", "br", "br-100")
            assert f"{vm(st)['mac']} dev {tap} " in fdb, fdb

            # drift 1: qemu killed outside nsg -> started again (after a 1 s back-off), guest back
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            st = d.wait(lambda s: vm(s).get("state") == "running" and vm(s).get("pid") not in (None, pid)
                        and vm(s).get("attached"), timeout=15, what="the VM started again after kill -9")
            restarted = time.monotonic() - t0
            boot = wait_ready(console)
            print(f"kill -9 qemu -> running again in {restarted:.2f}s, guest ready {boot:.1f}s later; {vm(st)}")
            assert restarted < 5.0 and vm(st)["restarts"] == 1
            out = ping(host)
            assert " 0% packet loss" in out, out

            # drift 2: its TAP deleted -> qemu's device is gone: restarted on a new TAP
            pid = vm(st)["pid"]
            sh("ip", "-n", ns, "link", "del", tap)
            st = d.wait(lambda s: vm(s).get("pid") not in (None, pid) and vm(s).get("attached"), timeout=15,
                        what="the VM restarted on a new TAP")
            assert vm(st)["restarts"] == 2
            wait_ready(console)
            out = ping(host)
            assert " 0% packet loss" in out, out

            # the daemon restarts: the running VM is adopted as it is, not restarted
            pid = vm(st)["pid"]
            d.stop()
            assert alive(pid), "the VM did not outlive the daemon"
            d = NsgProcess(ns, tmp_path / "gw.json", state)
            st = d.wait(lambda s: vm(s).get("state") == "running" and vm(s).get("attached"), timeout=20,
                        what="the VM adopted by the new daemon")
            assert vm(st)["pid"] == pid and vm(st)["restarts"] == 2 and st["vms"]["counters"]["changes"] == 0
            out = ping(host)
            assert " 0% packet loss" in out, out

            # the VM leaves the config: qemu stopped, TAP gone
            (tmp_path / "gw.json").write_text(json.dumps(config(kernel, initrd, vms=False)))
            d.hup_and_wait()
            deadline = time.monotonic() + 10
            while alive(pid) or tap in sh("ip", "-n", ns, "link", "show"):
                assert time.monotonic() < deadline, "the removed VM's qemu or TAP is still there"
                time.sleep(0.2)
        finally:
            d.stop()
    finally:
        netns.kill_namespace_processes(host)
        netns.delete_namespace(host)

"""containers.vm pure parts: the qemu command line, names, MACs, digests, back-off, pid checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from containers.vm import VmSpec, _is_our_qemu, backoff, qemu_argv

SPEC = VmSpec(name="fw", bridge="br-100", address="198.19.0.70/24", gateway="198.19.0.1", mtu=1388,
              kernel_url="file:///k", kernel_sha256="a" * 64, accel="tcg", memory_mb=128)


def test_argv_puts_the_guest_on_its_tap_with_its_mac_and_network_on_the_command_line():
    argv = qemu_argv(SPEC, Path("/k"), Path("/i,x"), Path("/state/fw.console"), qemu="qemu")
    assert argv[:3] == ["qemu", "-name", "guest=nsg-vm-fw"]
    assert argv[argv.index("-accel") + 1] == "tcg" and argv[argv.index("-m") + 1] == "128"
    assert f"tap,id=n0,ifname={SPEC.tap},script=no,downscript=no" in argv
    assert f"virtio-net-pci,netdev=n0,mac={SPEC.mac},romfile=" in argv
    assert argv[argv.index("-initrd") + 1] == "/i,x"
    append = argv[argv.index("-append") + 1]
    assert "nsg.ip=198.19.0.70/24" in append and "nsg.gw=198.19.0.1" in append and "nsg.mtu=1388" in append
    auto = qemu_argv(VmSpec(**{**SPEC.__dict__, "accel": "auto"}), Path("/k"), None, Path("/c,d"), qemu="q")
    assert auto[3:7] == ["-accel", "kvm", "-accel", "tcg"] and "-initrd" not in auto
    assert "file,id=con0,path=/c,,d,append=on" in auto  # a comma in a path is doubled for qemu


def test_names_and_macs_are_stable_and_distinct_and_the_digest_tracks_every_field():
    assert SPEC.tap.startswith("v-") and len(SPEC.tap) == 14
    assert SPEC.mac.startswith("06:") and SPEC.mac == VmSpec(**SPEC.__dict__).mac
    moved = VmSpec(**{**SPEC.__dict__, "address": "198.19.0.71/24"})
    assert moved.mac != SPEC.mac and moved.tap == SPEC.tap and moved.digest() != SPEC.digest()
    assert VmSpec(**{**SPEC.__dict__, "memory_mb": 256}).digest() != SPEC.digest()


def test_backoff_doubles_to_a_minute():
    assert [backoff(n) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_only_a_live_process_carrying_the_marker_counts_as_our_qemu():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-name", "guest=nsg-vm-fw"])
    try:
        for _ in range(100):  # until it has exec'd
            if _is_our_qemu(p.pid, "nsg-vm-fw"):
                break
            time.sleep(0.02)
        assert _is_our_qemu(p.pid, "nsg-vm-fw")
        assert not _is_our_qemu(p.pid, "nsg-vm-other")
        assert not _is_our_qemu(os.getpid(), "nsg-vm-fw")
        assert not _is_our_qemu(0, "nsg-vm-fw")
    finally:
        p.kill()
        p.wait()
    assert not _is_our_qemu(p.pid, "nsg-vm-fw")


def test_a_long_console_log_keeps_its_tail(tmp_path):
    from containers import vm as vmmod

    runner = vmmod.Vms(tmp_path)
    log = tmp_path / "fw.console"
    log.write_bytes(b"x" * vmmod.CONSOLE_MAX + b"THE END\n")
    runner._trim_console("fw")
    data = log.read_bytes()
    assert data.startswith(b"[nsg: console log cut back]") and data.endswith(b"THE END\n")
    assert len(data) < vmmod.CONSOLE_KEEP + 100
    runner._trim_console("fw")  # small now: left alone
    assert log.read_bytes() == data

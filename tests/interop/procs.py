"""Processes the interop harnesses start: stopped by pid, never by name; tcpdump captures."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


class CaptureError(RuntimeError):
    """A golden-file capture did not produce what it must (the lab's fault, not the codec's)."""


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
    """Send `sig` to `proc` by pid, SIGKILL it if it lingers past `timeout`; returns its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


class Tcpdump:
    """tcpdump in a namespace writing a pcap; stopped by pid with SIGINT so the file is complete."""

    def __init__(self, ns: str, ifname: str, pcap: Path, bpf: list[str]) -> None:
        self.pcap, self.err = pcap, pcap.with_suffix(".err")
        with open(self.err, "wb") as err:
            # --immediate-mode: without it packets still in the kernel ring are lost when we stop it
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "-n", "-U",
                                          "--immediate-mode", "-s", "0", "-Z", "root", "-w", str(pcap), *bpf],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + 5
        while b"listening on" not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CaptureError(f"tcpdump on {ns}/{ifname} did not start: {self.err.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT)

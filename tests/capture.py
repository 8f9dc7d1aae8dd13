"""tcpdump inside a namespace as an independent judge: start, wait until it listens, stop cleanly."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def capture(ns: str, ifname: str, path: Path, *filt: str) -> Iterator[Path]:
    argv = ["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode", "-w", str(path),
            *filt]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # "data link type ..." may come before "listening on ..."
            line = proc.stderr.readline()
            if "listening on" in line:
                break
        else:
            raise AssertionError(f"tcpdump did not start in {ns}: {line}")
        yield path
    finally:
        time.sleep(0.2)  # the last packets of the test reach the socket
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

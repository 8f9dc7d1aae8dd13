"""Start and drive an nsg daemon inside a test namespace."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import sh


class NsgProcess:
    def __init__(self, ns: str, config: Path | None, state: Path, *extra: str):
        self.ns, self.config, self.state = ns, config, state
        cfg_args = ["--config", str(config)] if config is not None else []
        self.log = state.parent / f"{state.name}.log"
        self._log = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "nsg.cli", "run", *cfg_args,
             "--state-dir", str(state), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @staticmethod
    def cli_argv() -> list[str]:
        return [sys.executable, "-m", "nsg.cli"]

    def status(self) -> dict | None:
        p = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "nsg.cli", "status", "--json",
                            "--state-dir", str(self.state)], capture_output=True, text=True, check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def wait(self, pred, timeout: float = 15.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nsg exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            st = self.status()
            if st and pred(st):
                return st
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last status {json.dumps(st)[:2000]}\n"
                             f"{self.log.read_text()[-3000:]}")

    def applies(self) -> int:
        st = self.status()
        return st["counters"]["applies"] if st else 0

    def hup_and_wait(self) -> dict:
        before = self.status()
        n = before["counters"]["reloads"]
        self.proc.send_signal(signal.SIGHUP)
        return self.wait(lambda s: s["counters"]["reloads"] > n and s["counters"]["applies"]
                         >= before["counters"]["applies"] + (0 if s["last_reload_error"] else 1),
                         what="reload")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def kernel_state(ns: str) -> dict:
    """Everything the daemon could touch, read back with iproute2."""

    def j(*args):
        out = sh("ip", "-n", ns, "-j", *args)
        return json.loads(out) if out.strip() else []

    links = [{k: link.get(k) for k in ("ifname", "mtu", "master", "operstate", "address", "flags")}
             for link in j("-d", "link", "show")]
    addrs = sorted((a["ifname"], i["local"], i["prefixlen"]) for a in j("addr", "show")
                   for i in a.get("addr_info", []) if i["family"] == "inet")
    routes = j("route", "show", "table", "all")
    fdb = json.loads(sh("ip", "netns", "exec", ns, "bridge", "-j", "fdb", "show") or "[]")
    return {"links": links, "addrs": addrs, "routes": routes, "fdb": fdb}

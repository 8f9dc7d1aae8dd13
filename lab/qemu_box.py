"""A gateway that is a qemu guest booted from the appliance image, plugged into a lab node's cables.

The lab node (say `b1`) keeps its namespace and its veths (`wan0` toward the internet or the NAT
router, `lan0` toward the branch switch); the box takes them over: each becomes a bridge port beside a
TAP device whose other end is the guest's virtio NIC. The node itself holds no address: it is the
patch panel, and the guest's kernel is the gateway. Port k of the node is the guest's onboard port
`eno<k>` (ACPI index k), the names an appliance's ports have.

The guest is reached only through what a hypervisor has: its serial console (a file here, read for the
image's NSG-IMAGE-READY line) and the qemu guest agent (`guest-exec` over a virtio port, which the image
starts only when that port exists). Nothing in the guest listens for the test on the network.

TCG only (no usable KVM here); qemu runs inside the node's namespace, so `Lab.down` stops it with the
rest, and it gets SIGKILL if the test process dies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.lab import Lab
from lab.netns import LabError

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
READY = re.compile(r"NSG-IMAGE-READY (.*)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NSG = "/opt/nsg/venv/bin/nsg"


class GuestError(LabError):
    """The guest (or its agent) did not do what was asked."""


def guest_port(k: int) -> str:
    """The guest's name for the node's k-th port (1-based): onboard index k."""
    return f"eno{k}"


class GuestAgent:
    """A client of the qemu guest agent (QMP-style JSON over the virtio port's host socket)."""

    def __init__(self, path: Path):
        self.path = path
        self._sock: socket.socket | None = None
        self._buf = b""
        self._id = int(time.time()) % 100000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(self.path))
            self._sock = s
        return self._sock

    def _send(self, obj: dict) -> None:
        self._connect().sendall(json.dumps(obj).encode() + b"\n")

    def _read(self, deadline: float) -> dict:
        s = self._connect()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the guest agent")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                self.close()
                raise GuestError("the guest agent's socket closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        line = line.lstrip(b"\xff")  # guest-sync-delimited's marker
        return json.loads(line) if line.strip() else {}

    def sync(self, timeout: float = 5) -> None:
        """Flush whatever a previous agent session left in the pipe (guest-sync-delimited)."""
        self._id += 1
        want = self._id
        self._send({"execute": "guest-sync-delimited", "arguments": {"id": want}})
        deadline = time.monotonic() + timeout
        while True:
            if self._read(deadline).get("return") == want:
                return

    def call(self, command: str, arguments: dict | None = None, timeout: float = 10) -> object:
        self._send({"execute": command, **({"arguments": arguments} if arguments else {})})
        reply = self._read(time.monotonic() + timeout)
        if "error" in reply:
            raise GuestError(f"guest agent refused {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.close()
                self.sync(timeout=3)
                return
            except (OSError, TimeoutError, GuestError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    raise GuestError(f"the guest agent did not answer within {timeout:.0f} s") from None
                time.sleep(1)

    def exec(self, argv: list[str], timeout: float = 60, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        args: dict = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode()
        pid = self.call("guest-exec", args)["pid"]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        while True:
            st = self.call("guest-exec-status", {"pid": pid})
            assert isinstance(st, dict)
            if st.get("exited"):
                out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                return subprocess.CompletedProcess(argv, st.get("exitcode", -st.get("signal", 0)), out, err)
            if time.monotonic() > deadline:
                raise GuestError(f"{' '.join(argv)} did not finish in the guest within {timeout:.0f} s")
            time.sleep(0.2)


@dataclass
class QemuBox:
    """One image box on ``node``'s ports (in guest order). ``disk`` is the box's own disk (a factory
    copy): the guest writes to it."""

    lab: Lab
    node: str
    disk: Path
    firmware: str = "bios"  # or "uefi" (OVMF)
    ports: tuple[str, ...] = ("wan0", "lan0")
    memory_mb: int = 1024
    cpus: int = 2
    proc: subprocess.Popen | None = field(default=None, init=False)
    started: list[float] = field(default_factory=list, init=False)  # monotonic time of each qemu start

    @property
    def dir(self) -> Path:
        return self.lab.node_dir(self.node)

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def agent(self) -> GuestAgent:
        if not hasattr(self, "_agent"):
            self._agent = GuestAgent(self.dir / "qga.sock")
        return self._agent

    def guest_port(self, node_port: str) -> str:
        return guest_port(self.ports.index(node_port) + 1)

    # --- cables ------------------------------------------------------------------------

    def wire(self) -> None:
        ns = self.lab.ns(self.node)
        for k, port in enumerate(self.ports, start=1):
            tap, br = f"tap{k}", f"patch{k}"
            for argv in (["ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"],
                         ["ip", "-n", ns, "link", "add", br, "type", "bridge", "stp_state", "0",
                          "forward_delay", "0"],
                         ["ip", "-n", ns, "link", "set", port, "master", br],
                         ["ip", "-n", ns, "link", "set", tap, "master", br],
                         ["ip", "-n", ns, "link", "set", tap, "up"],
                         ["ip", "-n", ns, "link", "set", port, "up"],
                         ["ip", "-n", ns, "link", "set", br, "up"]):
                p = subprocess.run(argv, capture_output=True, text=True, check=False)
                if p.returncode:
                    raise LabError(f"{self.node}: {' '.join(argv)}: {p.stderr.strip()}")

    # --- power -------------------------------------------------------------------------

    def argv(self) -> list[str]:
        argv = [QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-smp", str(self.cpus), "-display", "none",
                "-monitor", "none",
                # append: the console of every power-on in one file (READY lines are counted across them)
                "-chardev", f"file,id=console,path={self.console},append=on", "-serial", "chardev:console",
                "-chardev", f"socket,id=qga,path={self.dir / 'qga.sock'},server=on,wait=off",
                "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
                # a hardware watchdog as a board has one: systemd pets it (image: RuntimeWatchdogSec)
                "-device", "i6300esb"]
        idx = int.from_bytes(self.node.encode()[-2:], "big") % 250
        for k, _port in enumerate(self.ports, start=1):
            argv += ["-netdev", f"tap,id=n{k},ifname=tap{k},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n{k},mac=52:54:00:4e:{idx:02x}:{k:02x},acpi-index={k}"]
        # the i440fx machine under both firmwares: qemu 7.2 gives ACPI indexes (eno<k>) only there
        argv += ["-machine", "pc", "-drive", f"file={self.disk},format=raw,if=virtio"]
        if self.firmware == "uefi":
            vars_copy = self.dir / "OVMF_VARS.fd"
            if not vars_copy.exists():
                shutil.copyfile(OVMF_VARS, vars_copy)
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        return argv

    def power_on(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise LabError(f"{self.node}: the box is already on")
        (self.dir / "qga.sock").unlink(missing_ok=True)
        self.agent.close()
        self.started.append(time.monotonic())
        with self.console.open("a") as f:
            f.write(f"\n=== power on {len(self.started)} ===\n")
        self.proc = self.lab.spawn(self.node, "qemu", self.argv())

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL, no shutdown, no flush of the guest's caches."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.agent.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- what the guest says -----------------------------------------------------------

    def console_text(self) -> str:
        try:
            return ANSI.sub("", self.console.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def readies(self) -> list[dict[str, str]]:
        """Every NSG-IMAGE-READY line so far (one per boot that got nsg up), as fields."""
        return [dict(w.split("=", 1) for w in m.group(1).split() if "=" in w)
                for m in READY.finditer(self.console_text())]

    def wait_ready(self, count: int = 1, timeout: float = 420) -> dict[str, str]:
        """Until the ``count``-th READY line of this console (boots accumulate across resets)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.readies()
            if len(seen) >= count:
                return seen[count - 1]
            text = self.console_text()
            if "Kernel panic" in text[-20000:]:
                raise GuestError(f"{self.node}: kernel panic:\n{text[-3000:]}")
            if not self.running():
                raise GuestError(f"{self.node}: qemu exited ({self.proc and self.proc.returncode}):\n"
                                 f"{self.lab.log_path(self.node, 'qemu').read_text()[-1500:]}\n{text[-2000:]}")
            if time.monotonic() > deadline:
                raise GuestError(f"{self.node}: no NSG-IMAGE-READY #{count} within {timeout:.0f} s:\n{text[-3000:]}")
            time.sleep(1)

    def run(self, *argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        self.agent.wait(60)
        p = self.agent.exec(list(argv), timeout=timeout)
        if check and p.returncode != 0:
            raise GuestError(f"{self.node}: {' '.join(argv)} exited {p.returncode}: {p.stderr.strip()[-800:]}")
        return p

    def nsg(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(NSG, *args, timeout=timeout, check=check)

    def status(self) -> dict:
        return json.loads(self.nsg("status", "--json", "--state-dir", "/var/lib/nsg").stdout)

    def journal(self, unit: str = "nsg.service", lines: int = 200) -> str:
        with contextlib.suppress(GuestError, OSError, TimeoutError):
            return self.run("journalctl", "-b", "-u", unit, "-n", str(lines), "--no-pager", check=False).stdout
        return "(no journal: the guest agent did not answer)"

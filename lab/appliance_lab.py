"""The zero-touch lab (lab/zerotouch.py) with some branches as image boxes booted in qemu.

The controller, the hub (a namespace gateway, userspace ESP) and the route reflector run as in every
zero-touch lab; each branch named in ``boxes`` is a disk made from the image by `nsg-image factory`
(its own IDevID, signed by the lab's manufacturer CA, serial LAB-<NAME>) booted in qemu on that branch's
cables (lab/qemu_box.py); the other branches are namespace gateways. Nothing is typed on a box: it
gets its WAN address and the bootstrap server from DHCP option 143 and does the rest itself.

Used by tests/e2e/appliance and bench/appliance.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from image.factory import load_ca, make_box
from lab.lab import Lab
from lab.netns import LabError
from lab.qemu_box import GuestError, QemuBox, guest_port
from lab.topology import Plan
from lab.zerotouch import ZeroTouchLab, serial_of


class ApplianceLab:
    def __init__(self, lab: Lab, plan: Plan, image: Path, disks: Path, boxes: dict[str, str],
                 disk_size: int = 8 << 30):
        """``boxes``: branch name -> firmware ("bios" or "uefi"); ``disks``: where their disks go;
        ``disk_size``: each box's disk (sparse), bigger than the image as a box's is: the data partition
        grows into it at the first boot, and holds a downloaded upgrade bundle."""
        self.disk_size = disk_size
        self.lab = lab
        self.plan = plan
        self.image = image
        self.disks = disks
        self.zt = ZeroTouchLab(lab, plan)
        self.firmware = dict(boxes)
        self.zt.port_names = {gw: (guest_port(1), guest_port(2)) for gw in boxes}
        self.boxes: dict[str, QemuBox] = {}
        self.timings: dict = {}  # what a test or bench measured on this lab

    def prepare(self, *controller_args: str) -> None:
        """The controller (gateways registered with the boxes' port names), reflector, DHCP, hub; then
        each box's disk from the factory, wired to its branch's cables (not yet powered)."""
        self.zt.prepare(*controller_args)
        ca = load_ca(self.zt.mfg / "manufacturer.pem", self.zt.mfg / "manufacturer.key")
        for gw, firmware in self.firmware.items():
            disk = self.disks / f"{gw}.img"
            make_box(self.image, disk, serial_of(gw), ca, force=True)
            if disk.stat().st_size < self.disk_size:
                os.truncate(disk, self.disk_size)
            box = QemuBox(self.lab, gw, disk, firmware=firmware)
            box.wire()
            self.boxes[gw] = box

    def power_on(self, gw: str, *extra: str) -> float:
        """Power a branch on (a box, or a namespace gateway fresh from the factory); returns when."""
        t = time.monotonic()
        if gw in self.boxes:
            self.boxes[gw].power_on()
        else:
            self.zt.power_on(gw, *extra)
        return t

    def status(self, gw: str) -> dict:
        if gw in self.boxes:
            try:
                return self.boxes[gw].status()
            except (GuestError, TimeoutError, OSError, ValueError) as exc:
                raise LabError(f"{gw}: {exc}") from None
        return self.zt.gws.status(gw)

    def wait_tunnels(self, gw: str, timeout: float) -> dict:
        return self.zt.gws.wait_tunnels(gw, timeout=timeout, status=self.status)

    def diagnostics(self) -> str:
        """What to print when something did not come up: each box's console tail and nsg journal."""
        out = []
        for gw, box in self.boxes.items():
            text = box.console_text()
            # how many times the kernel started since the first power-on (a reboot loop shows here), and
            # the lines nsg's own units printed, before the console's tail
            boots = text.count("Linux version ")
            marks = [ln for ln in text.splitlines() if "NSG-" in ln or "nsg-start[" in ln or "watchdog" in ln.lower()]
            out.append(f"--- {gw} console: {boots} kernel start(s), power-ons {len(box.started)} ---\n"
                       + "\n".join(m[:300] for m in marks[-15:]) + f"\n...\n{text[-2500:]}")
            if not box.running():  # its agent cannot answer: no minute-long waits for nothing
                out.append(f"--- {gw}: not running ---")
                continue
            with contextlib.suppress(GuestError, OSError, TimeoutError):
                st = box.run("systemctl", "status", "--no-pager", "-n", "0", "nsg.service", timeout=20, check=False)
                jobs = box.run("systemctl", "list-jobs", "--no-pager", timeout=20, check=False)
                warn = box.run("journalctl", "-b", "-p", "warning", "-n", "30", "--no-pager", timeout=20, check=False)
                out.append(f"--- {gw} nsg.service ---\n{st.stdout[-1500:]}\n{jobs.stdout[-1500:]}\n"
                           f"--- {gw} warnings this boot ---\n{warn.stdout[-3000:]}")
            out.append(f"--- {gw} nsg journal ---\n{box.journal(lines=80)[-5000:]}")
            out.append(f"--- {gw} upgrade settle ---\n{box.journal('nsg-upgrade-settle.service', 20)[-2000:]}")
        for g in self.plan.gateways:
            if g.name not in self.boxes and self.lab.log_path(g.name, "nsg").exists():
                out.append(f"--- {g.name} nsg log ---\n{self.lab.log_path(g.name, 'nsg').read_text()[-2500:]}")
        out.append(f"--- controller ---\n{self.lab.log_path('ctl', 'controller').read_text()[-2500:]}")
        return "\n".join(out)

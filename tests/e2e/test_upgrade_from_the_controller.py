"""Issue 15 section 2 from the controller, in the zero-touch lab (controller, hub, route reflector, b1 and
b2 over ESP): the controller holds signed bundles and an upgrade profile; b1 downloads its bundle over the
device site with its LDevID, installs it into the inactive slot and asks for a reboot; after the reboot
the settle step commits the new slot, and the controller's `upgrade status` shows each step. Then a
second release whose trial cannot reach the controller (the channel blocked): settle gives up after the
commit window, the box boots its old slot again, and the controller shows the attempt fell back and that
b1 holds that version instead of trying it again.

What this proves: the controller's side whole (upload verified with the release keys, a forged bundle
refused, the profile rendered into b1's config, the bundle served to b1's LDevID over the device site,
the reports validated and shown), and the box's side from config to slot: the agent's download, the
real nsg.upgrade install (signature, model, version policy, SHA-256, the write and read-back, nsg_try in
a real GRUB env block), the record, settle's verdict from the daemon's own status (channel up or not),
and the report after each "boot". What it does not: b1 is a development tree whose A/B box is files
(`nsg run --test-upgrade-box`): slot "partitions" are regular files, "rebooting" writes a file, and the
test plays GRUB (it boots nsg_try once, else nsg_slot, by rewriting the kernel command line and the
release the slot runs) and restarts the daemon. No kernel boots a written slot here; that, GRUB's own
grub.cfg and the oneshot unit that runs settle are the image's (qemu) tests.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path

from image.bundle import generate_key, make_bundle
from lab.zerotouch import ZeroTouchLab
from nsg.upgrade.grubenv import GrubEnv, create_env, read_env, write_env
from nsg.upgrade.health import control_socket_probe, settle
from nsg.upgrade.install import file_box
from nsg.upgrade.manifest import ReleaseInfo
from tests.poll import until
from tests.unit.upgrade.conftest import fake_ext4

MODEL = "nsg-lab-x86_64"
SLOT_SIZE = 1 << 20
DEVICE_PORT = 8444


def make_release(tmp: Path) -> tuple[Path, Path, Path]:
    """The release key (private), the directory of its public key, and a stranger's key."""
    key, pub = generate_key(tmp / "release-key", "release")
    pubs = tmp / "release-keys"
    pubs.mkdir()
    shutil.copy(pub, pubs / pub.name)
    stranger, _ = generate_key(tmp / "stranger", "stranger")
    return key, pubs, stranger


def make(tmp: Path, key: Path, version: str) -> tuple[Path, bytes]:
    rootfs = fake_ext4(300 * 1024, seed=version.encode())
    img = tmp / f"rootfs-{version}.img"
    img.write_bytes(rootfs)
    out = tmp / f"nsg-{version}-{key.stem}.nsgb"
    make_bundle(img, out, key, version=version, min_version="1.0.0", model=MODEL)
    return out, rootfs


class AbBox:
    """b1's A/B box as files (nsg.upgrade.install.file_box), and the test playing its boot loader."""

    def __init__(self, root: Path, keys: Path):
        self.root = root
        (root / "by-partlabel").mkdir(parents=True)
        for slot in "ab":
            (root / f"slot-{slot}").write_bytes(slot.upper().encode() * SLOT_SIZE)
            (root / "by-partlabel" / f"nsg-root-{slot}").symlink_to(root / f"slot-{slot}")
        shutil.copytree(keys, root / "release-keys")
        create_env(root / "grubenv", GrubEnv().set("nsg_slot", "a").set("nsg_try", ""))
        self.boot_slot("a", "1.2.0")

    def boot_slot(self, slot: str, version: str) -> None:
        (self.root / "cmdline").write_text(f"BOOT_IMAGE=/boot/vmlinuz root=PARTLABEL=nsg-root-{slot} ro "
                                           f"nsg.slot={slot}\n")
        (self.root / "release.json").write_bytes(ReleaseInfo(model=MODEL, version=version,
                                                             min_version="1.0.0").to_json())

    def grub(self, versions: dict[str, str]) -> str:
        """What grub.cfg does at a reset: nsg_try once (cleared first), else nsg_slot."""
        env = read_env(self.root / "grubenv")
        slot = env.get("nsg_try") or env.get("nsg_slot")
        if env.get("nsg_try"):
            write_env(self.root / "grubenv", env.set("nsg_try", ""))
        self.boot_slot(slot, versions[slot])
        (self.root / "reboot-requested").unlink(missing_ok=True)
        return slot

    def env(self) -> dict[str, str]:
        return read_env(self.root / "grubenv").as_dict()


def test_bundle_profile_download_install_commit_and_fall_back(make_lab, tmp_path):
    key, pubs, stranger = make_release(tmp_path)
    b13, rootfs13 = make(tmp_path, key, "1.3.0")
    b14, _ = make(tmp_path, key, "1.4.0")
    forged, _ = make(tmp_path, stranger, "1.3.1")
    lab, plan = make_lab("two-branch-nat")
    zt = ZeroTouchLab(lab, plan)
    zt.prepare("--release-keys", str(pubs))
    ab = AbBox(lab.node_dir("b1") / "ab", pubs)
    b1_args = ("--channel-retry-max", "2", "--test-upgrade-box", str(ab.root))
    procs = {"b1": zt.power_on("b1", *b1_args), "b2": zt.power_on("b2", "--channel-retry-max", "2")}
    zt.wait_up(timeout=60)
    state_dir = zt.state_dir("b1")
    box = file_box(ab.root, state_dir)

    def status() -> dict[str, dict]:
        doc = json.loads(zt.controller("upgrade", "status", "acme", "--json").stdout)
        return {g["name"]: g for g in doc["gateways"]}

    def restart_b1() -> None:
        procs["b1"].send_signal(signal.SIGTERM)
        procs["b1"].wait(20)
        procs["b1"] = zt.power_on("b1", *b1_args)

    def run_settle() -> str:
        async def no_reboot() -> None:  # the box's would be systemctl reboot: the test plays the reset
            pass

        return asyncio.run(settle(box, control_socket_probe(state_dir), no_reboot, poll_s=1.0)).outcome

    # the operator's bundles: a forged one is refused at the door, the others kept
    refused = zt.controller("bundle", "upload", "acme", str(forged), check=False)
    assert refused.returncode == 2 and "bad-signature" in refused.stderr, refused.stderr
    for b in (b13, b14):
        zt.controller("bundle", "upload", "acme", str(b))
    st = until("both boxes report", lambda: (s := status())["b1"]["state"] and s["b2"]["state"] and s, 30)
    assert st["b1"]["state"]["running_version"] == "1.2.0" and st["b1"]["state"]["agent"]["action"] == "none"
    assert not st["b2"]["state"]["appliance"]  # b2 runs from a development tree with no A/B box

    # --- 1.3.0: downloaded over the device site, installed, rebooted into, committed -------------------
    t0 = time.monotonic()
    zt.controller("upgrade", "set", "acme", "--gateway", "b1", "--version", "1.3.0", "--commit-after", "30")
    until("b1 asks for a reboot", (ab.root / "reboot-requested").exists, 60)
    print(f"1.3.0 downloaded, verified, written and armed {time.monotonic() - t0:.1f}s after the profile was set")
    assert ab.env() == {"nsg_slot": "a", "nsg_try": "b"}
    assert (ab.root / "slot-b").read_bytes()[:len(rootfs13)] == rootfs13
    seen = until("the controller sees the armed attempt", lambda: (s := status()["b1"]["state"])
                 and s["agent"]["action"] == "rebooting" and s, 30)
    assert (seen["armed_slot"], seen["last_attempt"]["phase"]) == ("b", "armed")
    ctl_log = lab.log_path("ctl", "controller").read_text()
    assert "bundle download" in ctl_log and "bundle refused" not in ctl_log

    assert ab.grub({"a": "1.2.0", "b": "1.3.0"}) == "b"
    restart_b1()
    assert run_settle() == "committed"
    shown = until("the controller shows 1.3.0 committed", lambda: (s := status()["b1"]["state"])
                  and s["committed_version"] == "1.3.0" and s["agent"]["action"] == "up-to-date" and s, 40)
    assert (shown["running_version"], shown["booted_slot"], shown["committed_slot"]) == ("1.3.0", "b", "b")
    assert shown["last_attempt"]["phase"] == "committed" and ab.env() == {"nsg_slot": "b", "nsg_try": ""}
    table = zt.controller("upgrade", "status", "acme").stdout
    print(table)
    assert any(line.split()[:6] == ["b1", "1.3.0", "(own)", "1.3.0", "1.3.0", "b"] and "committed" in line
               for line in table.splitlines()), table

    # --- 1.4.0: its trial cannot reach the controller; the box falls back and holds the version ---------
    zt.controller("upgrade", "set", "acme", "--gateway", "b1", "--version", "1.4.0", "--commit-after", "15")
    until("b1 asks for a reboot", (ab.root / "reboot-requested").exists, 60)
    assert ab.env() == {"nsg_slot": "b", "nsg_try": "a"}
    assert ab.grub({"a": "1.4.0", "b": "1.3.0"}) == "a"
    block = (f"table inet e2e_block {{ chain out {{ type filter hook output priority 0; tcp dport {DEVICE_PORT} "
             "drop; }; }")  # b1's channel (and only it) to the device site
    lab.run("b1", "nft", block)
    try:
        restart_b1()
        t1 = time.monotonic()
        assert run_settle() == "rebooting"  # not healthy within 15 s: nsg_try cleared, reboot
        assert 14 < time.monotonic() - t1 < 40
    finally:
        lab.run("b1", "nft", "delete table inet e2e_block")
    assert ab.grub({"a": "1.4.0", "b": "1.3.0"}) == "b"  # nsg_slot: the old slot, by itself
    restart_b1()
    assert run_settle() == "fell-back"
    shown = until("the controller shows the fall-back", lambda: (s := status()["b1"]["state"])
                  and s["agent"]["action"] == "held" and s, 40)
    assert shown["last_attempt"]["phase"] == "fell-back" and shown["running_version"] == "1.3.0"
    assert "slot a was not healthy within 15 s: controller channel down" in shown["last_attempt"]["reason"]
    table = zt.controller("upgrade", "status", "acme").stdout
    print(table)
    assert "fell back: slot a was not healthy" in table and "held: 1.4.0 was tried here and fell back" in table
    time.sleep(12)  # more than one look of the agent: no second try
    assert not (ab.root / "reboot-requested").exists() and ab.env() == {"nsg_slot": "b", "nsg_try": ""}
    head = zt.controller("gateway", "status", "b1").stdout.splitlines()[0]
    assert "upgrade to 1.4.0 held" in head, head
    zt.gws.wait_tunnels("b1", timeout=60)
    r = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert r.returncode == 0, r.stdout  # and the overlay went on through all of it

"""Appliance figures (issue 15): a gateway booted from the image in qemu (TCG) beside the same gateway as
a process in a namespace on this host, in one lab, at the same moment.

    sudo .venv/bin/python bench/appliance.py [--image FILE --release-key FILE.key] [--idle 30] [--keep]

The lab is the "appliance" topology (lab/appliance_lab.py): the controller with its hub and route
reflector; b1 is an image box (SeaBIOS, its own factory IDevID); b2 (behind a NAT) and b3 are namespace
gateways (this development kernel has no ESP: they use the userspace engine). b1 and b2 are powered on
together, zero-touch both.

- boot_to_ping_s: qemu started -> the first ping b1-h1 -> b3-h1 answered (firmware, kernel, systemd,
  nsg, DHCP 143, SZTP, EST, channel, config, IKE, kernel XFRM). Peer: b2 from `nsg run --bootstrap` to
  b2-h1 -> b3-h1 (no boot: only nsg's part).
- rss_mb_idle: the daemon's VmRSS after --idle seconds with every tunnel up. Peer: b2's daemon, the same
  code on this host's Python (goal for the box: <= 80 MB).
- upgrade_commit_s: `nsg-controller upgrade set` of release 0.1.1 (the image's root filesystem respun
  with that version, signed with the image's release key) -> the controller shows it committed: download
  over the device site with the LDevID, verify, write slot b and read it back, reboot, settle. No peer
  runs here (no other A/B firmware); bundle_mb says what was moved.
- image_mb: the image's allocated size in MB (goal <= 600); image_apparent_mb, the raw disk.

Without --image the image is the test suite's (tests/e2e/appliance/image.py: build/appliance-test/, built
when missing or stale, as root, ~2 minutes). The last line is one JSON object (bench/_runner.py).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _runner import bench_main

from lab import topology
from lab.appliance_lab import ApplianceLab
from lab.lab import Lab

GOALS = {"image_mb": 600, "rss_mb_idle": 80}
WAIT_S = 900


def _ping_until(lab: Lab, src: str, dst: str, t0: float) -> float:
    while lab.run(src, "ping", "-c", "1", "-W", "0.5", dst, check=False).returncode:
        if time.monotonic() - t0 > WAIT_S:
            raise RuntimeError(f"no ping {src} -> {dst} within {WAIT_S} s")
    return round(time.monotonic() - t0, 1)


def _rss_mb(status_text: str) -> float:
    return round(int(re.search(r"^VmRSS:\s+(\d+) kB", status_text, re.M)[1]) / 1024, 1)


def _image(args: argparse.Namespace):
    from tests.e2e.appliance import image

    if args.image:
        rootfs = args.image.with_name(args.image.name.replace("-x86_64.img", "-rootfs.img"))
        return image.Image(args.image, rootfs, args.release_key, image.version(), None)
    return image.get()


def run(args: argparse.Namespace, workdir: Path) -> dict:
    from tests.e2e.appliance import releases

    img = _image(args)
    if img.release_key is None or img.rootfs is None or not img.rootfs.exists():
        raise RuntimeError("--image needs --release-key (the key the image trusts) and the rootfs beside it")
    bundle = releases.bundle(img.rootfs, workdir, img.release_key, "0.1.1")
    keys = workdir / "release-keys"
    keys.mkdir()
    (keys / "lab-release.pem").write_bytes(img.release_key.with_suffix(".pem").read_bytes())
    lab = Lab(f"ba{secrets.token_hex(3)}")
    plan = lab.up(topology.load("appliance"))
    al = ApplianceLab(lab, plan, img.path, workdir, {"b1": "bios"})
    try:
        al.prepare("--release-keys", str(keys))
        al.power_on("b3")  # the far end both ping (its tunnels come up as the others do)
        t_box = al.power_on("b1")
        t_ns = al.power_on("b2")
        ns_ping = _ping_until(lab, "b2-h1", "198.19.0.31", t_ns)
        box_ping = _ping_until(lab, "b1-h1", "198.19.0.31", t_box)
        ready = al.boxes["b1"].readies()[0]
        for gw in ("b1", "b2"):
            al.wait_tunnels(gw, WAIT_S)
        time.sleep(args.idle)
        box = al.boxes["b1"]
        pid = box.run("systemctl", "show", "-p", "MainPID", "--value", "nsg.service").stdout.strip()
        rss_box = _rss_mb(box.run("cat", f"/proc/{pid}/status").stdout)
        ns_pid = int((lab.dir / "logs" / "b2-nsg.pid").read_text())
        # the pid file holds `ip netns exec`'s pid, which execs nsg: the same process
        rss_ns = _rss_mb(Path(f"/proc/{ns_pid}/status").read_text())

        al.zt.controller("bundle", "upload", "acme", str(bundle))
        t_up = time.monotonic()
        al.zt.controller("upgrade", "set", "acme", "--gateway", "b1", "--version", "0.1.1", "--commit-after", "300")
        while True:
            doc = json.loads(al.zt.controller("upgrade", "status", "acme", "--json").stdout)
            st = next(g for g in doc["gateways"] if g["name"] == "b1").get("state") or {}
            if st.get("committed_version") == "0.1.1":
                upgrade_s = round(time.monotonic() - t_up, 1)
                break
            if time.monotonic() - t_up > 2 * WAIT_S:
                raise RuntimeError(f"0.1.1 not committed within {2 * WAIT_S} s: {st}")
            time.sleep(2)
    except BaseException:
        print(al.diagnostics(), file=sys.stderr)
        raise
    finally:
        lab.down()
    result = {
        "bench": "appliance",
        "boot_to_ping_s": box_ping,
        "upgrade_commit_s": upgrade_s,
        "image_mb": round(img.path.stat().st_blocks * 512 / 1e6, 1),
        "rss_mb_idle": rss_box,
        "peer": {"what": "the same gateway as a namespace process on this host (userspace ESP, no boot)",
                 "start_to_ping_s": ns_ping, "rss_mb_idle": rss_ns},
        "box": {"firmware": "seabios", "accel": "tcg", "guest_uptime_at_ready_s": float(ready["uptime"]),
                "kernel_esp": ready["kernel_esp"] == "true"},
        "image_apparent_mb": round(img.path.stat().st_size / 1e6, 1),
        "bundle_mb": round(bundle.stat().st_size / 1e6, 1),
        "idle_s": args.idle,
        "goals": GOALS,
    }
    result["meets_goals"] = result["image_mb"] <= GOALS["image_mb"] and rss_box <= GOALS["rss_mb_idle"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, help="a built image (default: the test suite's, built if needed)")
    ap.add_argument("--release-key", type=Path, help="the private key the --image trusts (to sign 0.1.1)")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds idle before RSS is read")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    def unavailable() -> str | None:
        from tests.e2e.appliance import image

        missing = image.missing()
        return "; ".join(missing) if missing else None

    return bench_main("appliance", args, run, unavailable)


if __name__ == "__main__":
    sys.exit(main())

"""Issue 15 section 2 on the image: A/B upgrades of the qemu boxes from the controller, both at once.

1. Release 0.1.1 is uploaded and set for b1 (SeaBIOS). b1 downloads it with its LDevID, verifies it and starts
   writing slot b; the power is cut (qemu killed) in the middle of the write. The box boots slot a again
   (nsg_try was never armed), says the attempt was interrupted, tries again, writes and arms slot b,
   reboots into it (GRUB boots nsg_try once), and commits it once its daemon is healthy and its channel
   up. The controller shows 0.1.1 running and committed on slot b.
2. Release 0.1.2 is broken: its daemon exits at start. It is set for b2 (OVMF, behind the NAT), which
   installs it into slot b and boots it once; nsg never gets healthy, so after the commit window
   `nsg upgrade settle` clears the trial and reboots; GRUB boots the committed slot a (0.1.0) by itself,
   and the controller shows the attempt fell back and 0.1.2 held.

Both releases are respins of the image's own root filesystem (tests/e2e/appliance/releases.py), signed with
the release key the image trusts. Each box's disk is its own (a factory copy, 8 GiB sparse).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.appliance import releases
from tests.e2e.appliance.conftest import pytestmark  # noqa: F401 - the package's marks

STEP_S = 600  # download + verify + write + read-back of a ~650 MB slot, or a boot, under TCG


def until(what: str, check, timeout: float, every: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except Exception as exc:  # noqa: BLE001 - a guest rebooting answers nothing for a while
            got, last = None, exc
        else:
            last = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last})" if last else ""))
        time.sleep(every)


def shown(apl, gw: str = "b1") -> dict:
    doc = json.loads(apl.zt.controller("upgrade", "status", "acme", "--json").stdout)
    return next(g for g in doc["gateways"] if g["name"] == gw).get("state") or {}


def record(box) -> dict:
    p = box.run("cat", "/var/lib/nsg/upgrade.json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else {}


@pytest.fixture(scope="module")
def bundles(appliance_image, tmp_path_factory):
    if appliance_image.release_key is None or appliance_image.rootfs is None:
        pytest.fail("NSG_IMAGE is set without NSG_RELEASE_KEY (the image's release private key) or the "
                    "rootfs beside it: the upgrade tests cannot sign a release the image trusts")
    work = tmp_path_factory.mktemp("releases")
    made = {v: releases.bundle(appliance_image.rootfs, work, appliance_image.release_key, v, broken=v == "0.1.2")
            for v in ("0.1.1", "0.1.2")}
    yield made
    for b in made.values():
        b.unlink(missing_ok=True)


def commit_after_a_power_cut(apl, bundles, t0: float) -> dict:
    """b1: 0.1.1 is being written into slot b when the power is cut; it comes back on slot a, tries again,
    arms b, boots it once and commits it."""
    box = apl.boxes["b1"]
    rec = until("b1 writes slot b", lambda: (r := record(box)) and r.get("attempt", {}).get("phase") == "writing"
                and r, STEP_S, every=1.0)
    time.sleep(3)  # some of the slot written, not all
    box.power_cut()
    print(f"b1: power cut {time.monotonic() - t0:.0f} s after the profile was set, while writing: {rec['attempt']}")
    box.power_on()
    again = box.wait_ready(2, STEP_S)
    assert again["slot"] == "a" and again["start"] == "resume", again  # the old slot, by itself
    t1 = time.monotonic()
    trial = box.wait_ready(3, 2 * STEP_S)
    assert trial["slot"] == "b", trial
    done = until("the controller shows 0.1.1 committed", lambda: (s := shown(apl, "b1"))
                 and s.get("committed_version") == "0.1.1" and s.get("agent", {}).get("action") == "up-to-date" and s,
                 STEP_S)
    print(f"b1: 0.1.1 committed {time.monotonic() - t1:.0f} s after the box was back on; "
          f"{time.monotonic() - t0:.0f} s after the profile was set")
    assert (done["running_version"], done["booted_slot"], done["committed_slot"]) == ("0.1.1", "b", "b"), done
    assert done["last_attempt"]["phase"] == "committed", done
    st = box.status()
    assert st["upgrade"]["running_version"] == "0.1.1" and st["channel"]["connected"]
    assert json.loads(box.nsg("version", "--json").stdout)["slot"] == "b"
    return done


def fall_back_from_a_broken_release(apl, bundles, t0: float) -> dict:
    """b2: 0.1.2 (its daemon exits at start) is armed in slot b and boots once; it never gets healthy,
    settle reboots, slot a boots by itself."""
    box = apl.boxes["b2"]
    boots = len(box.readies())
    armed = until("b2 arms slot b", lambda: (s := shown(apl, "b2")) and s.get("armed_slot") == "b" and s, STEP_S)
    assert armed["agent"]["action"] == "rebooting" and armed["last_attempt"]["phase"] == "armed", armed
    print(f"b2: 0.1.2 armed in slot b {time.monotonic() - t0:.0f} s after the profile was set")
    # the trial boots slot b, whose daemon never comes up (no READY line); settle gives up and reboots
    # into slot a, which comes up: the next READY line is slot a's
    back = box.wait_ready(boots + 1, 2 * STEP_S)
    assert back["slot"] == "a", back
    # the kernel said which slot it booted (its command line, on the serial console): the trial of b
    # happened, and no boot of b ever got nsg ready
    cmdlines = re.findall(r"Command line: (.*)", box.console_text())
    assert any("nsg.slot=b" in c for c in cmdlines), cmdlines
    assert all(r["slot"] == "a" for r in box.readies()), box.readies()
    fell = until("the controller shows the fall-back", lambda: (s := shown(apl, "b2"))
                 and s.get("agent", {}).get("action") == "held" and s, STEP_S)
    print(f"b2: fell back and held 0.1.2 {time.monotonic() - t0:.0f} s after the profile was set")
    assert fell["last_attempt"]["phase"] == "fell-back", fell
    assert (fell["running_version"], fell["committed_slot"], fell["booted_slot"]) == ("0.1.0", "a", "a"), fell
    return fell


def test_upgrades_commit_after_a_power_cut_and_fall_back_from_a_broken_release(apl, bundles):
    """The two upgrades run at once (one on each box), as a fleet's would."""
    for gw in ("b1", "b2"):
        assert shown(apl, gw)["running_version"] == "0.1.0"
    for v in ("0.1.1", "0.1.2"):
        apl.zt.controller("bundle", "upload", "acme", str(bundles[v]))
    t0 = time.monotonic()
    apl.zt.controller("upgrade", "set", "acme", "--gateway", "b1", "--version", "0.1.1", "--commit-after", "300")
    apl.zt.controller("upgrade", "set", "acme", "--gateway", "b2", "--version", "0.1.2", "--commit-after", "60")
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(commit_after_a_power_cut, apl, bundles, t0),
                pool.submit(fall_back_from_a_broken_release, apl, bundles, t0)]
        for job in jobs:
            job.result()
    table = apl.zt.controller("upgrade", "status", "acme").stdout
    print(table)
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()}
    assert rows["b1"].split()[:6] == ["b1", "0.1.1", "(own)", "0.1.1", "0.1.1", "b"] and "committed" in rows["b1"]
    assert "fell back" in rows["b2"] and "held: 0.1.2" in table, table
    # and the overlay is whole again: both boxes back in it
    for gw in ("b1", "b2"):
        apl.wait_tunnels(gw, timeout=300)
    r = apl.lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert r.returncode == 0, r.stdout

"""The appliance lab shared by this package's modules (one per pytest run: two qemu boxes take ~75 s to
boot under TCG): lab/appliance_lab.py with b1 (SeaBIOS) and b2 (OVMF, behind a NAT) as image boxes and b3
as a namespace gateway, the controller holding the image's release key. Modules run in name order on it:
test_kernel_esp, test_strongswan_guest, then test_upgrade (which reboots b1)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from lab import topology
from lab.appliance_lab import ApplianceLab
from lab.lab import Lab
from tests.conftest import unique_name
from tests.e2e.appliance import image
from tests.peers import require_peer, require_root

pytestmark = [pytest.mark.root, require_root("network namespaces and qemu TAP devices"),
              require_peer(image.missing())]

BOXES = {"b1": "bios", "b2": "uefi"}
HOSTS = {"b1": "198.19.0.11", "b2": "198.19.0.21", "b3": "198.19.0.31"}
BOOT_S = 480  # power-on to tunnels up, per box, under TCG with two guests on two cores


@pytest.fixture(scope="package")
def apl(appliance_image, tmp_path_factory, request):
    lab = Lab(unique_name("q"))
    plan = lab.up(topology.load("appliance"))
    disks = tmp_path_factory.mktemp("disks")
    al = ApplianceLab(lab, plan, appliance_image.path, disks, BOXES)
    keys = disks / "release-keys"
    keys.mkdir()
    if appliance_image.release_key is not None:
        shutil.copy(appliance_image.release_key.with_suffix(".pem"), keys)
    try:
        al.prepare("--release-keys", str(keys))
        on = {gw: al.power_on(gw) for gw in ("b1", "b2", "b3")}
        al.timings = {}
        for gw in BOXES:
            ready = al.boxes[gw].wait_ready(1, BOOT_S)
            al.timings[f"{gw}_ready_s"] = round(time.monotonic() - on[gw], 1)
            al.timings[f"{gw}_ready"] = ready
        for gw in ("b1", "b2", "b3"):
            al.wait_tunnels(gw, timeout=BOOT_S - (time.monotonic() - on[gw]))
            al.timings[f"{gw}_tunnels_s"] = round(time.monotonic() - on[gw], 1)
        while lab.run("b1-h1", "ping", "-c", "1", "-W", "1", HOSTS["b2"], check=False).returncode:
            assert time.monotonic() - on["b1"] < BOOT_S, "no ping b1-h1 -> b2-h1"
        al.timings["boot_to_ping_s"] = round(time.monotonic() - max(on["b1"], on["b2"]), 1)
        print(json.dumps({k: v for k, v in al.timings.items() if k.endswith("_s")}))
        failed = request.session.testsfailed
        yield al
        if request.session.testsfailed > failed:  # what the boxes said, for whoever reads the failure
            print(al.diagnostics())
    except BaseException:
        print(al.diagnostics())
        raise
    finally:
        lab.down()
        shutil.rmtree(disks, ignore_errors=True)

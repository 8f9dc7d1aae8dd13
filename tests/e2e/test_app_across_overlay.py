"""A container app on b1 and a LAN host on b2, same subnet, across the encrypted overlay: the app is
attached to b1's bridge by nsg, its MAC is learned there and announced by EVPN (through the
reflector beside the hub), and the two ping each other inside ESP."""

from __future__ import annotations

import json
import os
import time

import pytest

from lab.gateways import Gateways
from tests import docker_engine

pytestmark = pytest.mark.skipif(not docker_engine.available() or os.geteuid() != 0,
                                reason="needs root and dockerd")

APP_IP = "198.19.0.50"


def test_container_app_pings_a_lan_host_across_the_overlay(make_lab):
    engine = docker_engine.DockerEngine().start()
    try:
        image = engine.busybox_image()
        lab, plan = make_lab("two-branch-nat")
        gws = Gateways(lab, plan, transport="esp")
        paths = gws.write_configs()
        cfg = json.loads(paths["b1"].read_text())
        cfg["apps"] = [{"name": "web", "image": image, "subnet": plan.tenant.name, "address": APP_IP,
                        "command": ["sleep", "3600"], "memory_mb": 32}]
        paths["b1"].write_text(json.dumps(cfg))
        gws.start("b1", "--docker", engine.url)
        gws.start("b2")
        for g in ("b1", "b2"):
            gws.wait_tunnels(g, timeout=30)
        t0 = time.monotonic()
        deadline = t0 + 30
        while True:
            st = gws.status("b1")
            apps = (st.get("apps") or {}).get("apps") or [{}]
            if apps[0].get("state") == "running" and apps[0].get("attached"):
                break
            assert time.monotonic() < deadline, f"app not up: {st.get('apps')}"
            time.sleep(0.2)
        r = lab.run("b2-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", APP_IP, check=False)
        assert r.returncode == 0, r.stdout
        c = engine.client.containers.get("nsg-web")
        out = c.exec_run(["ping", "-c", "2", "-W", "2", "198.19.0.21"])
        assert out.exit_code == 0, out.output
        # the app's MAC reached b2 through EVPN: an FDB entry toward b1's system IP
        mac = c.exec_run(["cat", "/sys/class/net/eth0/address"]).output.decode().strip()
        fdb = gws.status("b2")["fdb"]
        assert f"vx-100 {mac} dst {plan.gateways[0].system_ip}" in fdb, fdb
        print(f"app on b1 up {time.monotonic() - t0:.2f}s after the tunnels; b2-h1 <-> app pings ok; b2 FDB has {mac}")
    finally:
        engine.stop()

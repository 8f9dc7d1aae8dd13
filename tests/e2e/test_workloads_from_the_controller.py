"""Issue 6's story end to end, all from the controller: the operator uploads a `docker save` tarball
and adds an app to b1 without an address (the controller's IPAM picks it) and a VM to b2; the boxes
come up zero-touch, b1 downloads the image over the device site with its LDevID, checks its SHA-256,
loads and runs it; b2 boots the VM on a TAP of its bridge. The container on b1, the LAN host on b2
and the VM on b2 — one subnet, two sites — reach each other across the ESP overlay, and the
controller's API shows each workload's state. Then bad images: a tarball whose layers are missing
(docker load fails) and one the controller serves with the wrong bytes (SHA-256 mismatch) are
reported to the controller with the reason, and the running app and its traffic are not disturbed."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

from lab.zerotouch import ZeroTouchLab
from tests import docker_engine, vm_guest
from tests.peers import require_peer, require_root
from tests.poll import until

pytestmark = [require_root("namespaces, dockerd"), require_peer(docker_engine.missing() + vm_guest.missing())]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(engine: docker_engine.DockerEngine, ref: str, dest: Path) -> Path:
    """`docker save REF` into a file."""
    assert engine.client is not None
    with open(dest, "wb") as f:
        for chunk in engine.client.images.get(ref).save(named=True):
            f.write(chunk)
    return dest


def broken_tarball(dest: Path, ref: str) -> Path:
    """A manifest naming a layer the tarball does not carry: the controller takes it (it checks only
    the manifest), the engine's load fails on the gateway."""
    manifest = json.dumps([{"Config": "cfg.json", "RepoTags": [ref], "Layers": ["missing/layer.tar"]}]).encode()
    with tarfile.open(dest, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return dest


def test_app_lan_host_and_vm_across_the_overlay_from_the_controller(make_lab, tmp_path):
    engine = docker_engine.DockerEngine().start()
    try:
        image = engine.busybox_image()
        lab, plan = make_lab("two-branch-nat")
        subnet = plan.tenant.name
        zt = ZeroTouchLab(lab, plan)
        zt.prepare()

        def api(*args: str) -> dict:
            readable = args[:2] in (("gateway", "status"), ("gateway", "show"))  # text without --json
            return json.loads(zt.controller(*args, *(["--json"] if readable else [])).stdout)

        # the operator's part: an image, an app without an address, a VM
        tar = save(engine, image, tmp_path / "busybox.tar")
        uploaded = api("image", "upload", "acme", str(tar))
        assert uploaded["sha256"] == sha256(tar) and image in uploaded["references"]
        app = api("app", "add", "b1", "web", "--subnet", subnet, "--image", image, "--command", "sleep 3600",
                  "--memory-mb", "32")
        app_ip = app["address"]
        assert app_ip == str(plan.tenant.cidr.broadcast_address - 1)  # IPAM: the highest free host
        kernel = vm_guest.guest_kernel()
        initrd = vm_guest.build_initramfs(tmp_path, kernel)
        vm = api("vm", "add", "b2", "vm1", "--subnet", subnet, "--kernel", f"{kernel}@{sha256(kernel)}",
                 "--initrd", f"{initrd}@{sha256(initrd)}", "--accel", "tcg", "--memory-mb", "192",
                 "--append", "quiet cryptomgr.notests")
        vm_ip = vm["address"]
        assert vm_ip == str(plan.tenant.cidr.broadcast_address - 2)  # the next one down: shared IPAM

        # the boxes come up zero-touch; b1 has the Docker engine
        t0 = time.monotonic()
        zt.power_on("b1", "--docker", engine.url, "--telemetry-interval", "3")
        zt.power_on("b2", "--telemetry-interval", "3")
        zt.wait_up(timeout=60)

        def app_state(name: str = "web") -> dict:
            return (api("app", "show", "b1", name).get("live") or {})

        until("the app running on b1, as the controller sees it",
              lambda: app_state().get("state") == "running" and app_state().get("attached"), timeout=60)
        print(f"app running {time.monotonic() - t0:.1f}s after power-on: {app_state()}")
        console = zt.state_dir("b2") / "vms" / "vm1.console"
        until("the VM's guest up on b2", lambda: console.exists() and vm_guest.READY in console.read_text(
            errors="replace"), timeout=90)
        print(f"VM guest ready {time.monotonic() - t0:.1f}s after power-on")

        # every pair talks across the overlay (b1 and b2 are two sites; the subnet is stretched by EVPN)
        lan_host = "198.19.0.21"  # b2-h1 (lab/topology.py)
        container = engine.client.containers.get("nsg-web")
        for target in (lan_host, vm_ip):
            out = container.exec_run(["ping", "-c", "3", "-W", "2", target])
            assert out.exit_code == 0, (target, out.output.decode())
        r = lab.run("b2-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", app_ip, check=False)
        assert r.returncode == 0, r.stdout
        r = lab.run("b2-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", vm_ip, check=False)
        assert r.returncode == 0, r.stdout
        out = container.exec_run(["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {vm_ip} 80"])
        assert f"nsg-guest {vm_ip}" in out.output.decode(), out.output.decode()
        # ... through ESP: both engines carried tunnel traffic, and b2 learned the app's MAC by EVPN
        st1, st2 = zt.gws.status("b1"), zt.gws.status("b2")
        for st in (st1, st2):
            assert st["tunnels"]["engine"]["tun_in"] > 0 and st["tunnels"]["engine"]["udp_in"] > 0, st["tunnels"]
        mac = container.exec_run(["cat", "/sys/class/net/eth0/address"]).output.decode().strip()
        assert any(mac in e and "vx-" in e for e in st2["fdb"]), st2["fdb"]

        # the controller's view: state, address, restarts, memory, CPU; the VM's state
        status = api("gateway", "status", "b1")
        live = status["apps"]["web"]
        assert status["connected"] and live["state"] == "running" and live["address"] == f"{app_ip}/24"
        assert live["restarts"] == 0
        # memory and CPU come with the periodic telemetry (every 3 s here; a state change goes at once)
        def usage() -> dict | None:
            a = api("gateway", "status", "b1")["apps"]["web"]
            return a if a.get("memory_mb") and a.get("cpu_percent") is not None else None

        live = until("memory and CPU use reported", usage, timeout=45)
        assert 0 < live["memory_mb"] <= 32 and 0 <= live["cpu_percent"] < 100, live
        vm_live = until("the VM reported", lambda: api("gateway", "status", "b2")["vms"].get("vm1"), timeout=40)
        assert vm_live["state"] == "running" and vm_live["attached"] and vm_live["address"] == f"{vm_ip}/24"
        table = zt.controller("app", "list", "b1").stdout
        assert "web" in table and "running" in table and app_ip in table, table

        # the enterprise's firewall: the container may not ping the VM (by name: the controller puts in
        # their addresses); the rest of the tenant allowed. Enforced on b1, counted, reported.
        policy = {"tenants": [{"name": "corp", "subnets": [subnet], "default": "allow", "acl": [
            {"name": "no-ping-vm", "src": "app:web", "dst": "vm:vm1", "protocol": "icmp", "action": "drop"}]}]}
        (tmp_path / "policy.json").write_text(json.dumps(policy))
        zt.controller("policy", "set", "acme", str(tmp_path / "policy.json"))
        until("b1 running the policy", lambda: (zt.gws.status("b1").get("policy") or {}).get("applied"), timeout=20)
        out = container.exec_run(["ping", "-c", "3", "-W", "1", vm_ip])
        assert out.exit_code != 0 and "0 packets received" in out.output.decode(), out.output.decode()
        assert container.exec_run(["ping", "-c", "2", "-W", "2", lan_host]).exit_code == 0
        r = lab.run("b2-h1", "ping", "-c", "2", "-i", "0.2", "-W", "2", vm_ip, check=False)
        assert r.returncode == 0, r.stdout
        seen: list[int] = []

        def dropped() -> int | None:  # counters arrive with the periodic telemetry: maybe one taken mid-ping
            seen.append(json.loads(zt.controller("policy", "counters", "b1", "--json").stdout)["counters"].get(
                "acl.corp.no-ping-vm", {}).get("packets") or 0)
            return seen[-1] if seen[-1] >= 3 else None

        counted = until("the drop counted in the controller's API", dropped, timeout=20)
        print(f"policy from the controller: container -> VM pings dropped on b1, counted {counted} (seen {seen})")
        assert counted == 3

        # bad images: reported to the controller, nothing else disturbed
        broken = broken_tarball(tmp_path / "broken.tar", "nsg-test/broken:1")
        api("image", "upload", "acme", str(broken))
        api("app", "add", "b1", "bad", "--subnet", subnet, "--image", "nsg-test/broken:1")
        engine.busybox_image("nsg-test/busybox:2")
        other = save(engine, "nsg-test/busybox:2", tmp_path / "busybox2.tar")
        assert engine.client is not None
        engine.client.images.remove("nsg-test/busybox:2")  # b1 must fetch it
        stored = api("image", "upload", "acme", str(other))["sha256"]
        served = zt.ctl_dir / "state" / "images" / f"{stored}.tar"
        data = bytearray(served.read_bytes())
        data[len(data) // 2] ^= 0xFF  # the controller's copy goes bad (one bit in a layer)
        served.write_bytes(bytes(data))
        api("app", "add", "b1", "bad2", "--subnet", subnet, "--image", "nsg-test/busybox:2", "--command",
            "sleep 3600")  # runnable, were it loaded
        t_bad = time.monotonic()
        err = until("the load failure reported", lambda: app_state("bad").get("error"), timeout=30)
        print(f"broken tarball reported to the controller after {time.monotonic() - t_bad:.1f}s: {err}")
        assert err.startswith("app bad: loading the image tarball for nsg-test/broken:1"), err
        err2 = until("the hash mismatch reported", lambda: app_state("bad2").get("error"), timeout=30)
        print(f"hash mismatch reported: {err2}")
        assert "SHA-256" in err2 and stored in err2, err2
        assert not any(c.name in ("nsg-bad", "nsg-bad2") and c.status == "running"
                       for c in engine.client.containers.list(all=True))
        assert app_state()["state"] == "running" and app_state()["restarts"] == 0
        r = lab.run("b2-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", app_ip, check=False)
        assert r.returncode == 0, r.stdout
    finally:
        engine.stop()

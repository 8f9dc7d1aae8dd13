"""Apps on a real Docker engine, attached to a tenant bridge inside a test namespace: created with
no network of their own, given eth0 (address, MTU, default route) from outside, reachable by ping
both ways; drift repaired (docker kill, docker rm -f, a restart by docker, dockerd restart); a
container nsg does not own is never touched; a bad spec (unknown image) is reported, others go on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests import docker_engine
from tests.conftest import sh
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("namespaces, dockerd"),
    require_peer(docker_engine.missing()),
]

# Runs inside the test namespace (the bridge is there): one reconcile pass, result as JSON.
APPLY = r"""
import json, sys
from containers.app_runner import Apps
from containers.docker_backend import DockerBackend
from containers.spec import AppSpec
url, specs = sys.argv[1], json.loads(sys.argv[2])
apps = Apps(DockerBackend(url))
desired = {s["name"]: AppSpec(**{**s, "command": tuple(s.get("command", ()))}) for s in specs}
res = apps.apply(desired)
print(json.dumps({"changes": res.changes, "errors": res.errors,
                  "actual": {n: [r.state, r.attachment is not None] for n, r in apps.actual(desired).items()}}))
"""


@pytest.fixture(scope="module")
def engine():
    e = docker_engine.DockerEngine().start()
    try:
        yield e
    finally:
        e.stop()


def spec(name: str, image: str, address: str, **kw) -> dict:
    return {"name": name, "image": image, "bridge": "br-100", "address": address, "gateway": "198.19.0.1",
            "mtu": 1388, "command": ["sleep", "3600"], **kw}


def apply(ns: str, engine, specs: list[dict]) -> dict:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", APPLY, engine.url, json.dumps(specs)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pings(ns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", address],
                          capture_output=True, check=False).returncode == 0


def test_apps_attach_ping_and_repair(netns_name, engine):
    ns = netns_name
    sh("ip", "-n", ns, "link", "add", "br-100", "type", "bridge")
    sh("ip", "-n", ns, "addr", "add", "198.19.0.1/24", "dev", "br-100")
    sh("ip", "-n", ns, "link", "set", "br-100", "up")
    image = engine.busybox_image()
    foreign = engine.client.containers.run(image, ["sleep", "3600"], name="not-nsgs", network_mode="none",
                                           detach=True)
    web = spec("web", image, "198.19.0.50/24", memory_mb=64, pids=64)
    t0 = time.monotonic()
    res = apply(ns, engine, [web])
    took = time.monotonic() - t0
    assert res["errors"] == {} and [c.split()[0] for c in res["changes"]] == ["create", "start", "attach"], res
    assert res["actual"] == {"web": ["running", True]}
    assert pings(ns, "198.19.0.50")
    c = engine.client.containers.get("nsg-web")
    out = c.exec_run(["ping", "-c", "1", "-W", "2", "198.19.0.1"])
    assert out.exit_code == 0, out.output
    mtu = c.exec_run(["cat", "/sys/class/net/eth0/mtu"]).output.decode().strip()
    assert mtu == "1388"
    assert c.attrs["HostConfig"]["Memory"] == 64 << 20 and c.attrs["HostConfig"]["NetworkMode"] == "none"
    print(f"app created, started, attached in {took:.2f}s")
    # the same desired state again: nothing to do
    assert apply(ns, engine, [web])["changes"] == []

    # drift: docker kill -> started and attached again
    c.kill()
    t0 = time.monotonic()
    res = apply(ns, engine, [web])
    assert [x.split()[0] for x in res["changes"]] == ["start", "attach"], res
    assert pings(ns, "198.19.0.50")
    print(f"after docker kill: back and attached in {time.monotonic() - t0:.2f}s")
    # drift: docker rm -f -> a new container
    c.remove(force=True)
    res = apply(ns, engine, [web])
    assert [x.split()[0] for x in res["changes"]] == ["create", "start", "attach"], res
    assert pings(ns, "198.19.0.50")
    # an address change: re-attached in place, same container
    cid = engine.client.containers.get("nsg-web").id
    res = apply(ns, engine, [{**web, "address": "198.19.0.51/24"}])
    assert [x.split()[0] for x in res["changes"]] == ["attach"] and pings(ns, "198.19.0.51")
    assert engine.client.containers.get("nsg-web").id == cid
    # dockerd restarts: the container comes back by its restart policy in a new netns -> attached
    engine.restart()
    deadline = time.monotonic() + 20
    while engine.client.containers.get("nsg-web").status != "running":
        assert time.monotonic() < deadline, "docker did not restart the app"
        time.sleep(0.2)
    res = apply(ns, engine, [{**web, "address": "198.19.0.51/24"}])
    assert [x.split()[0] for x in res["changes"]] == ["attach"], res
    assert pings(ns, "198.19.0.51")
    # a bad spec: reported by name, the good app untouched
    res = apply(ns, engine, [{**web, "address": "198.19.0.51/24"}, spec("bad", "nsg-test/nope:0", "198.19.0.60/24")])
    assert set(res["errors"]) == {"bad"} and "not loaded" in res["errors"]["bad"] and res["changes"] == []
    # the app removed from the desired state: its container goes; the foreign one stays
    res = apply(ns, engine, [])
    assert [x.split()[0] for x in res["changes"]] == ["remove"]
    names = {c.name for c in engine.client.containers.list(all=True)}
    assert "not-nsgs" in names and "nsg-web" not in names
    foreign.remove(force=True)


def test_image_tarballs_are_hash_checked_before_loading(netns_name, engine, tmp_path):
    """An app whose image comes as a `docker save` tarball: loaded only if its bytes hash to the
    SHA-256 in the desired state; a mismatch or a corrupt tarball is an error naming the app and the
    reason, the engine is not touched by it, and the other app runs on."""
    import hashlib

    ns = netns_name
    sh("ip", "-n", ns, "link", "add", "br-100", "type", "bridge")
    sh("ip", "-n", ns, "addr", "add", "198.19.0.1/24", "dev", "br-100")
    sh("ip", "-n", ns, "link", "set", "br-100", "up")
    base = engine.busybox_image()
    engine.client.images.get(base).tag("acme/tool", "7")
    tar = tmp_path / "tool.tar"
    with open(tar, "wb") as f:
        for chunk in engine.client.images.get("acme/tool:7").save(named=True):
            f.write(chunk)
    engine.client.images.remove("acme/tool:7")
    good_sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(b"not a tarball at all" * 100)
    corrupt_sha = hashlib.sha256(corrupt.read_bytes()).hexdigest()
    keep = spec("keep", base, "198.19.0.40/24")
    assert apply(ns, engine, [keep])["errors"] == {}

    bad = spec("tool", "acme/tool:7", "198.19.0.41/24", image_url=f"file://{tar}", image_sha256="0" * 64)
    res = apply(ns, engine, [keep, bad])
    assert set(res["errors"]) == {"tool"} and "SHA-256 is " + good_sha in res["errors"]["tool"], res
    assert not [i for i in engine.client.images.list() if "acme/tool:7" in i.tags]  # nothing loaded
    res = apply(ns, engine, [keep, {**bad, "image_url": f"file://{corrupt}", "image_sha256": corrupt_sha}])
    assert set(res["errors"]) == {"tool"} and "loading the image tarball" in res["errors"]["tool"], res
    assert res["actual"]["keep"] == ["running", True] and pings(ns, "198.19.0.40")

    good = {**bad, "image_sha256": good_sha}
    res = apply(ns, engine, [keep, good])
    assert res["errors"] == {} and [c.split()[0] for c in res["changes"]] == ["create", "start", "attach"], res
    assert pings(ns, "198.19.0.41")
    assert apply(ns, engine, [])["errors"] == {}

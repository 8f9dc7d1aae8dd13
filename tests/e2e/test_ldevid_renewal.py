"""Tunnels authenticated by LDevIDs survive the LDevID's renewal (issue 13 section 2): with a 200 s
certificate life the gateways re-enroll over EST at two thirds of it (about 33 s in, counting the CA's
5 minute backdating); a ping runs across the renewal without a loss, the running SAs stay, and a
brand-new IKE SA afterwards (b2 restarted) authenticates both ways with the renewed certificates."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from cryptography import x509

from lab.zerotouch import ZeroTouchLab


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((line for line in f if line.startswith("State:")), "")
    except OSError:
        return "zombie"


def _ldevid(zt: ZeroTouchLab, gw: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((zt.state_dir(gw) / "identity" / "ldevid.pem").read_bytes())


def test_tunnels_keep_running_across_an_ldevid_renewal(make_lab):
    lab, plan = make_lab("two-branch-nat")
    zt = ZeroTouchLab(lab, plan)
    zt.prepare("--ldevid-lifetime", "200")
    zt.power_on_all("--channel-retry-max", "2")
    zt.wait_up(timeout=60)
    first = {g: _ldevid(zt, g) for g in ("b1", "b2")}
    spis = {p["peer"]: p["ike_sa"]["local_spi"] for p in zt.gws.status("b1")["tunnels"]["ike"] if p["ike_sa"]}
    ping = subprocess.Popen(lab.exec_argv("b1-h1", ["ping", "-i", "0.2", "-W", "1", "198.19.0.21"]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while any(_ldevid(zt, g).serial_number == first[g].serial_number for g in ("b1", "b2")):
            assert time.monotonic() < deadline, "the LDevIDs were not renewed"
            time.sleep(1)
        time.sleep(3)
    finally:
        ping.send_signal(signal.SIGINT)
        out = ping.communicate(timeout=10)[0]
    summary = next(line for line in out.splitlines() if "packets transmitted" in line)
    print("across the renewal:", summary)
    sent, received = int(summary.split()[0]), int(summary.split()[3])
    assert sent > 50 and received >= sent - 1, summary  # the request in flight at SIGINT may be unanswered
    renewed = {g: _ldevid(zt, g) for g in ("b1", "b2")}
    for g in ("b1", "b2"):
        assert renewed[g].subject == first[g].subject and renewed[g].public_key() != first[g].public_key()
    st = zt.gws.status("b1")
    # the running IKE SAs stayed (a credential change does not tear them down)
    assert {p["peer"]: p["ike_sa"]["local_spi"] for p in st["tunnels"]["ike"] if p["ike_sa"]} == spis

    # a new IKE SA from scratch: b2 restarts (its state kept) and authenticates anew, both ways, renewed
    pid = int((lab.dir / "logs" / "b2-nsg.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid):
        assert time.monotonic() < deadline, "b2 did not stop"
        time.sleep(0.2)
    zt.power_on("b2", "--channel-retry-max", "2")
    zt.wait_up(timeout=60)
    st = zt.gws.status("b1")
    b2 = next(p for p in st["tunnels"]["ike"] if p["peer"] == "b2")
    assert b2["ike_sa"]["local_spi"] != spis["b2"]  # a new IKE SA
    r = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert r.returncode == 0, r.stdout

"""nsg <-> nsg: child and IKE SA rekeys started by either side lose no packet of a 10 ms ping
across the encrypted overlay; a gateway that restarts gets its tunnel back."""

from __future__ import annotations

import re
import signal
import subprocess
import time

from lab.gateways import Gateways, nsg_argv


def spis(gws, gw):
    t = gws.status(gw)["tunnels"]
    sa = t["ike"][0]["ike_sa"]
    return sa["local_spi"], tuple(c["in_spi"] for c in sa["children"])


def settle(gws, gw, timeout=15):
    """Until the gateway holds exactly one child SA (the old one lingered and is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sa = gws.status(gw)["tunnels"]["ike"][0]["ike_sa"]
        if sa and sa["state"] == "established" and len(sa["children"]) == 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"{gw} did not settle: {gws.status(gw)['tunnels']['ike']}")


def test_rekeys_lose_nothing_and_restart_recovers(make_lab):
    lab, plan = make_lab("two-branch-nat")
    gws = Gateways(lab, plan, transport="esp", ipsec_options={"rekey_overlap_s": 1.0})
    gws.write_configs()
    procs = {g: gws.start(g) for g in ("b1", "b2")}
    for g in ("b1", "b2"):
        gws.wait_tunnels(g)

    ping = subprocess.Popen(lab.exec_argv("b1-h1", ["ping", "-i", "0.01", "-W", "1", "198.19.0.21"]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    done = []
    for gw, ike in (("b1", False), ("b2", False), ("b1", True), ("b2", True)):
        before = spis(gws, gw)
        peer = "b2" if gw == "b1" else "b1"
        lab.run(gw, *nsg_argv("ipsec", "rekey", peer, *(["--ike"] if ike else []), "--state-dir",
                              str(gws.state_dir(gw))))
        for g in ("b1", "b2"):
            settle(gws, g)
        after = spis(gws, gw)
        assert after[0 if ike else 1] != before[0 if ike else 1], (gw, ike, before, after)
        done.append(f"{gw}:{'ike' if ike else 'child'}")
        time.sleep(0.3)
    ping.send_signal(signal.SIGINT)
    out = ping.communicate(timeout=10)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, got = int(m[1]), int(m[2])
    print(f"rekeys {done}: ping -i 0.01 {sent} transmitted, {got} received")
    # SIGINT ends ping at once: a request sent less than one round trip before it cannot have its
    # reply counted. So: every request up to the last one answered was answered, and at most that
    # final in-flight one is missing.
    seqs = sorted(int(x) for x in re.findall(r"icmp_seq=(\d+) ", out))
    assert sent > 200 and seqs == list(range(1, seqs[-1] + 1)) and sent - got <= 1 and seqs[-1] >= sent - 1, \
        (sent, got, sorted(set(range(1, sent + 1)) - set(seqs)))

    # b2 (behind the NAT, the initiator) dies and comes back: it builds a new IKE SA, b1 replaces the old one
    procs["b2"].send_signal(signal.SIGKILL)
    procs["b2"].wait(5)
    t0 = time.monotonic()
    gws.start("b2")
    gws.wait_tunnels("b2")
    gws.wait_tunnels("b1")
    r = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    print(f"restarted b2: tunnel and ping back after {time.monotonic() - t0:.2f}s")
    assert r.returncode == 0, r.stdout

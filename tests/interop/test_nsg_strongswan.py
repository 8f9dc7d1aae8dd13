"""Our gateway daemon against a real strongSwan: IKEv2 + ESP-in-UDP between nsg and charon.

Two namespaces joined by a veth: nsg (transport "esp", userspace ESP engine, TUN nsg-esp) on one
side, charon (kernel-libipsec, TUN ipsec0) on the other. The traffic selectors are nsg's system IP
/32 <-> charon's inner /32; the IKE identities are those two addresses (ID_IPV4_ADDR), with a PSK or
with ECDSA certificates from a test CA whose subjectAltNames carry the same addresses.

Each case checks that both sides agree on the SAs (IKE SPIs, child SPIs), that pings cross in both
directions and move the ESP counters on both sides, and that child and IKE SA rekeys started by
either side lose no packet of a 10 ms ping that runs through all of them.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nsg.control_socket import ControlError, request
from tests.interop import strongswan as strongswan_mod
from tests.interop.certs import issue_cert, make_ca
from tests.interop.nsg_charon import CHILD, IKE, PEER, PSK, Pinger, View, agreed, nsg_ike, spi
from tests.interop.strongswan import Charon, Child, Connection
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_peer, require_root

pytestmark = [
    pytest.mark.root,
    require_root("network namespaces"),
    require_peer(strongswan_mod.missing()),
]

NSG_WAN, SW_WAN = "198.18.50.1", "198.18.50.2"  # the IKE/ESP-in-UDP addresses on the veth
NSG_SYS, SW_INNER = "198.19.250.1", "198.19.250.2"  # traffic selectors and IKE identities

# The rekeys that run during the 10 ms ping, one after another, in every case (each case takes ~8 s,
# most of it the 5 s an old inbound SA lingers after a child rekey).
REKEYS = (("nsg", "child"), ("charon", "child"), ("nsg", "ike"), ("charon", "ike"))
CASES = [pytest.param(role, auth, id=f"nsg-{role}-{auth}")
         for auth in ("psk", "cert") for role in ("initiator", "responder")]


# ---------------------------------------------------------------------------------------------
# The stage: two namespaces, a veth, charon's inner address on its lo (nsg puts its own system IP)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    gw: str  # nsg's namespace
    sw: str  # charon's namespace

    def run(self, ns: str, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                              check=False)


@contextlib.contextmanager
def stage() -> Iterator[Stage]:
    from lab import netns

    prefix = f"ns{secrets.token_hex(3)}-"
    st = Stage(prefix + "gw", prefix + "sw")
    made: list[str] = []
    try:
        for ns in (st.gw, st.sw):
            netns.add_namespace(ns)
            made.append(ns)
        netns.add_veth(st.gw, "wan0", st.sw, "ike-b", alias=prefix + "wan")
        netns.add_address(st.sw, "ike-b", f"{SW_WAN}/24")
        netns.add_address(st.sw, "lo", f"{SW_INNER}/32")
        yield st
    finally:
        for ns in made:
            netns.kill_namespace_processes(ns)  # only what this test started runs in them
            netns.delete_namespace(ns)


def nsg_config(role: str, auth: str, pki: dict[str, Path]) -> dict[str, Any]:
    ipsec: dict[str, Any] = {"auth": "psk"} if auth == "psk" else {
        "auth": "certificate", **{k: str(pki[k]) for k in ("cert", "key", "ca")}}
    ipsec["rekey_overlap_s"] = 1.0  # old inbound SAs linger 1 s after a rekey (5 s by default): a faster test
    return {
        "schema_version": 1,
        "system_ip": NSG_SYS,
        "transport": "esp",
        "ipsec": ipsec,
        "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": f"{NSG_WAN}/24",
                     "gateway": SW_WAN}],
        "peers": [{"name": PEER, "system_ip": SW_INNER, "endpoint": SW_WAN,
                   "initiate": "always" if role == "initiator" else "never",
                   **({"psk": PSK} if auth == "psk" else {})}],
    }


def charon_connection(auth: str, pki: dict[str, Path]) -> Connection:
    child = Child(CHILD, (f"{SW_INNER}/32",), (f"{NSG_SYS}/32",))
    creds: dict[str, Any] = {"psk": PSK} if auth == "psk" else {
        "auth": "pubkey", "cert": pki["sw_cert"], "key": pki["sw_key"], "cacerts": (pki["ca"],)}
    return Connection(IKE, remote_addrs=(NSG_WAN,), local_id=SW_INNER, remote_id=NSG_SYS, children=(child,),
                      encap=True, **creds)


def make_pki(directory: Path) -> dict[str, Path]:
    ca = make_ca(directory)
    ours = issue_cert(ca, directory, kind="ecdsa", ip=NSG_SYS, stem="nsg")
    theirs = issue_cert(ca, directory, kind="ecdsa", ip=SW_INNER, stem="sw")
    return {"cert": ours.cert, "key": ours.key, "ca": ca.cert_path, "sw_cert": theirs.cert, "sw_key": theirs.key}


# ---------------------------------------------------------------------------------------------
# Reading both sides
# ---------------------------------------------------------------------------------------------

def nsg_status(state: Path) -> dict[str, Any] | None:
    """The daemon's status document over its control socket (what `nsg status --json` prints)."""
    try:
        return request(state, "status", timeout=5)
    except (ControlError, OSError):
        return None


def wait_until(what: str, probe: Callable[[], Any], timeout: float, diag: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diag()}")
        time.sleep(0.05)


def nsg_counters(st: dict[str, Any]) -> dict[str, int]:
    out = {"in": 0, "out": 0}
    for c in st["tunnels"]["child_sas"]:
        out[c["dir"]] += c["packets"]
    return out


def ping(stage: Stage, ns: str, src: str, dst: str, count: int = 3, wait: float = 2.0) -> subprocess.CompletedProcess:
    return stage.run(ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", str(wait), "-I", src, dst)


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------

@dataclass
class Sides:
    stage: Stage
    charon: Charon
    nsg: NsgProcess

    def status(self) -> dict[str, Any] | None:
        if self.nsg.proc.poll() is not None:
            raise AssertionError(f"nsg exited with {self.nsg.proc.returncode}:\n{self.nsg_log()}")
        return nsg_status(self.nsg.state)

    def nsg_log(self, lines: int = 40) -> str:
        return "\n".join(self.nsg.log.read_text(errors="replace").splitlines()[-lines:])

    def diag(self) -> str:
        st = self.status()
        return (f"--- nsg ike: {json.dumps(nsg_ike(st))}\n--- nsg child_sas: "
                f"{json.dumps(((st or {}).get('tunnels') or {}).get('child_sas'))}\n--- nsg log\n{self.nsg_log()}\n"
                f"--- charon SAs: {self.charon.list_sas()}\n{self.charon.log_tail(40)}")

    def agreed(self, timeout: float = 10.0, what: str = "both sides to agree on the SAs",
               also: Callable[[View], bool] = lambda _v: True) -> View:
        def probe() -> View | None:
            v = agreed(self.status(), self.charon.list_sas())
            return v if v is not None and also(v) else None

        return wait_until(what, probe, timeout, self.diag)

    def nsg_cli(self, *argv: str) -> subprocess.CompletedProcess:
        return self.stage.run(self.stage.gw, sys.executable, "-m", "nsg.cli", *argv, "--state-dir",
                              str(self.nsg.state))

    def rekey(self, who: str, kind: str) -> None:
        if who == "nsg":
            r = self.nsg_cli("ipsec", "rekey", PEER, *(["--ike"] if kind == "ike" else []))
            assert r.returncode == 0 and "started" in r.stdout, r.stdout + r.stderr
        elif kind == "child":
            assert self.charon.rekey_child(CHILD) >= 1
        else:
            assert self.charon.rekey_ike(IKE) >= 1


@contextlib.contextmanager
def running(tmp_path: Path, role: str, auth: str) -> Iterator[Sides]:
    pki = make_pki(tmp_path / "pki") if auth == "cert" else {}
    with stage() as st, contextlib.ExitStack() as stack:
        charon = Charon(st.sw, tmp_path / "charon", SW_WAN, name="charon")
        charon.add(charon_connection(auth, pki))
        stack.enter_context(charon)
        cfg = tmp_path / "nsg.json"
        cfg.write_text(json.dumps(nsg_config(role, auth, pki)))
        nsg = NsgProcess(st.gw, cfg, tmp_path / "state")
        stack.callback(nsg.stop)
        yield Sides(st, charon, nsg)


@pytest.mark.parametrize(("role", "auth"), CASES)
def test_nsg_with_strongswan(tmp_path, role, auth):
    t0 = time.monotonic()
    with running(tmp_path, role, auth) as s:
        # --- 1. the SAs come up, and both sides agree on them -----------------------------
        wait_until("nsg to set up the peering",
                   lambda: any(p["peer"] == PEER for p in ((s.status() or {}).get("tunnels") or {}).get("ike", [])),
                   15, s.diag)
        if role == "responder":
            # nsg routes charon's inner address into its TUN, but without SAs nothing gets through
            assert ping(s.stage, s.stage.gw, NSG_SYS, SW_INNER, count=1, wait=0.3).returncode != 0
            logs = s.charon.initiate(CHILD, IKE)
            assert any("established" in line for line in logs), logs
        v = s.agreed(15, "the IKE SA and child SA")
        assert v.nsg_initiator == (role == "initiator")
        assert v.charon_ike["state"] == "ESTABLISHED" and v.charon_child["state"] == "INSTALLED"
        assert v.charon_ike["remote-id"] == NSG_SYS and v.charon_ike["local-id"] == SW_INNER
        assert v.nsg_sa["remote_id"] == SW_INNER
        assert v.charon_child["encap"] == "yes" and v.charon_child["encr-alg"] == "AES_GCM_16"
        assert v.charon_ike["remote-port"] == "4500"
        if auth == "cert":
            # charon sends its certificate only when asked (send_cert = ifasked): nsg's CERTREQ named our CA
            log = s.charon.log_path.read_text(errors="replace")
            assert 'received cert request for "O=nsg tests, CN=nsg interop test CA"' in log, s.charon.log_tail()
            assert f'sending end entity cert "O=nsg tests, CN={SW_INNER}"' in log
        # the same, as the operator sees it: `nsg status --json`
        cli = s.nsg_cli("status", "--json")
        assert cli.returncode == 0, cli.stderr
        tun = json.loads(cli.stdout)["tunnels"]
        assert tun["backend"] == "userspace"
        assert [p["ike_sa"]["state"] for p in tun["ike"]] == ["established"]
        assert {(c["dir"], spi(c["spi"])) for c in tun["child_sas"]} == {("in", v.child_in), ("out", v.child_out)}

        # --- 2. traffic both ways, counted on both sides ------------------------------------
        before_nsg, before_sw = nsg_counters(s.status()), s.agreed().charon_child
        for ns, src, dst in ((s.stage.gw, NSG_SYS, SW_INNER), (s.stage.sw, SW_INNER, NSG_SYS)):
            r = ping(s.stage, ns, src, dst, count=3)
            assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout + r.stderr + s.diag()
        after_nsg, after_sw = nsg_counters(s.status()), s.agreed().charon_child
        # 3 requests + 3 replies each way
        assert after_nsg["out"] - before_nsg["out"] >= 6 and after_nsg["in"] - before_nsg["in"] >= 6
        assert int(after_sw["packets-in"]) - int(before_sw["packets-in"]) >= 6
        assert int(after_sw["packets-out"]) - int(before_sw["packets-out"]) >= 6
        up_s = time.monotonic() - t0

        # --- 3. rekeys from both sides under a 10 ms ping -----------------------------------
        pinger = Pinger(s.stage.gw, NSG_SYS, SW_INNER)
        result: dict[str, Any] | None = None
        try:
            wait_until("the first replies", lambda: len(pinger.replies) >= 5, 5, s.diag)
            retired: set[int] = set()  # child SPIs (both directions) that must leave nsg's status
            current = s.agreed()
            for who, kind in REKEYS:
                old = current
                s.rekey(who, kind)
                if kind == "child":
                    current = s.agreed(10, f"the child rekey started by {who}",
                                       lambda v, o=old: v.child_in != o.child_in and v.child_out != o.child_out)
                    assert current.ike == old.ike
                    retired |= {old.child_in, old.child_out}
                else:
                    current = s.agreed(10, f"the IKE rekey started by {who}",
                                       lambda v, o=old: v.ike[0] != o.ike[0] and v.ike[1] != o.ike[1])
                    # 2.18: the child SAs move to the new IKE SA unchanged; who rekeyed is its initiator now
                    assert (current.child_in, current.child_out) == (old.child_in, old.child_out)
                    assert current.nsg_initiator == (who == "nsg")
                time.sleep(0.3)  # some traffic on the new SAs before the next rekey

            def old_gone() -> bool:
                st = s.status()
                sa = nsg_ike(st)
                spis = {spi(c["spi"]) for c in st["tunnels"]["child_sas"]} if st else set()
                kids = {spi(c[k]) for c in (sa or {}).get("children", []) for k in ("in_spi", "out_spi")}
                return not (spis | kids) & retired and spis == {current.child_in, current.child_out}

            wait_until("the retired child SAs to leave nsg's status", old_gone, 10, s.diag)
            final = s.agreed(5, "the final SAs")
            assert (final.ike, final.child_in, final.child_out) == (current.ike, current.child_in, current.child_out)
            result = pinger.stop()
        finally:
            if result is None and pinger.proc.poll() is None:  # failed on the way: what did the ping see?
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    print(f"\n[{role}/{auth}] ping when the test failed: {pinger.stop()}")
            pinger.kill()
        rekey_s = time.monotonic() - t0 - up_s
        sa_counters = final.nsg_sa["counters"]
        print(f"\n[{role}/{auth}] up in {up_s:.1f}s; rekeys {[f'{w}:{k}' for w, k in REKEYS]} in {rekey_s:.1f}s; "
              f"ping -i 0.01: {result['transmitted']} transmitted, {result['received']} received, "
              f"{result['loss']}% loss; nsg IKE counters {sa_counters}")
        assert result["errors"] == 0 and not result["unusual"], result
        assert result["transmitted"] == result["received"] and result["loss"] == "0", result
        # it ran from before the first rekey until after the last one settled, at about its pace
        assert result["transmitted"] >= 0.5 * result["seconds"] / pinger.interval, result
        # both ends count the rekeys they took part in; none was retried, nothing had to be resent
        assert sa_counters["child_rekeys"] == sum(k == "child" for _w, k in REKEYS)
        assert sa_counters["ike_rekeys"] == sum(k == "ike" for _w, k in REKEYS)
        assert sa_counters["retransmits"] == sa_counters["integrity_failures"] == sa_counters["malformed"] == 0

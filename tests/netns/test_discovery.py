"""Bootstrap server discovery against real peers, each in namespaces made here:

* dnsmasq as DHCP server (option 143, vendor option 43 for class "nsg", domain, DNS server)
  and as DNS server (SRV and TXT under _sztp, RFC 8572 section 4 "DNS Server"), client busybox udhcpc;
* avahi-daemon publishing _sztp._tcp, browsed by python-zeroconf from the other namespace;
* the fake IMDSv2, started through its command line on the client namespace's loopback;
* nsg-bootstrap.json in a temporary directory, which wins over everything after it.

Discovery runs inside the client namespace (``ip netns exec`` + a small script), since
udhcpc, the DNS socket and zeroconf must all live there.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap.sources.dhcp import encode_option_143
from bootstrap.sources.mdns import SERVICE_TYPE
from lab import netns
from tests.conftest import sh, unique_name

ROOT = Path(__file__).resolve().parents[2]
SERVER_IP = "198.18.90.1"
CLIENT_IP = "198.18.90.2"
URI_143 = ["https://bs1.example.com:8443", "https://198.18.90.1:9443/sztp"]
URI_43 = ["https://vendor.example.com"]
PATH = "/nsg"  # a base path; the SZTP client appends /restconf/...

# Runs inside the client namespace: build the sources named in argv[1] (JSON), discover,
# print the outcome as JSON.
SCRIPT = r"""
import asyncio, json, subprocess, sys
from bootstrap.sources import DiscoveryContext, DiscoveryStats, discover
from bootstrap.sources.default import DefaultSource
from bootstrap.sources.dhcp import DhcpSource
from bootstrap.sources.dns import DnsSource
from bootstrap.sources.file import FileSource
from bootstrap.sources.imds import ImdsSource
from bootstrap.sources.mdns import MdnsSource

cfg = json.loads(sys.argv[1])

async def apply(lease):
    subprocess.run(["ip", "addr", "replace", f"{lease.address}/{lease.prefixlen}", "dev", lease.interface],
                   check=True)

def build(spec):
    kind = spec["kind"]
    if kind == "file":
        return FileSource(spec["dirs"])
    if kind == "dhcp":
        return DhcpSource(spec["interface"], apply_lease=apply)
    if kind == "dns":
        return DnsSource()
    if kind == "mdns":
        return MdnsSource(browse_time=spec["browse_time"])
    if kind == "imds":
        return ImdsSource(spec["url"])
    return DefaultSource()

async def main():
    ctx = DiscoveryContext(serial_number=cfg.get("serial"))
    stats = DiscoveryStats()
    found = await discover([build(s) for s in cfg["sources"]], ctx, stats=stats,
                           collect_all=cfg.get("collect_all", False))
    print(json.dumps({
        "servers": [{"uri": s.uri, "source": s.source,
                     "inline": None if s.inline is None else [s.inline.conveyed_information.hex(),
                               s.inline.owner_certificate.hex(), s.inline.ownership_voucher.hex()]}
                    for s in found],
        "domain": ctx.domain, "nameservers": ctx.nameservers, "instance_id": ctx.instance_id,
        "attempts": stats.attempts, "failures": stats.failures, "last_error": stats.last_error}))

asyncio.run(main())
"""


def discover_in(ns: str, sources: list[dict], **cfg) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT,
                           json.dumps({"sources": sources, **cfg})],
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def udp_listening(ns: str, port: int) -> bool:
    """Is something bound to UDP ``port`` in ``ns``? (/proc/net/udp: local_address is hex ip:port)"""
    rows = sh("ip", "netns", "exec", ns, "cat", "/proc/net/udp").splitlines()[1:]
    return any(int(r.split()[1].split(":")[1], 16) == port for r in rows)


def wait_until(pred, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Procs:
    """Processes a test started; stopped by pid (SIGTERM, then SIGKILL), also on failure."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path, **kw) -> subprocess.Popen:
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdout=kw.pop("stdout", out), stderr=out, stdin=subprocess.DEVNULL,
                                 start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)


@pytest.fixture
def pair(netns_name):
    """(server namespace, client namespace), joined by veth srv0 <-> c0; the server side has
    SERVER_IP. Both namespaces and everything in them go away afterwards."""
    srv = unique_name("s")
    netns.add_namespace(srv)
    procs = Procs()
    try:
        sh("ip", "link", "add", "name", "srv0", "netns", srv, "type", "veth", "peer", "name", "c0",
           "netns", netns_name)
        sh("ip", "-n", srv, "link", "set", "srv0", "up")
        sh("ip", "-n", netns_name, "link", "set", "c0", "up")
        sh("ip", "-n", srv, "addr", "add", f"{SERVER_IP}/24", "dev", "srv0")
        yield srv, netns_name, procs
    finally:
        procs.stop()
        netns.kill_namespace_processes(srv)
        netns.delete_namespace(srv)


def start_dnsmasq(procs: Procs, ns: str, tmp: Path, *options: str) -> None:
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    procs.start(["ip", "netns", "exec", ns, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null",
                 "--interface=srv0", "--bind-interfaces", "--no-resolv", "--no-hosts", "--user=root",
                 "--dhcp-authoritative", "--no-ping", "--dhcp-range=198.18.90.10,198.18.90.20,255.255.255.0,1h",
                 f"--dhcp-leasefile={tmp / 'leases'}", f"--pid-file={tmp / 'dnsmasq.pid'}",
                 "--log-dhcp", "--log-queries", "--log-facility=-", *options], tmp / "dnsmasq.log")
    wait_until(lambda: udp_listening(ns, 67), "dnsmasq DHCP socket")


def colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def test_dhcp_options_then_dns_records(pair, tmp_path):
    """One dnsmasq: DHCP names servers in 143 and 43 and hands out domain + name server; DNS
    then answers the device-specific TXT (serial SN1) or, for SN2, the _sztp SRV records."""
    srv, client, procs = pair
    start_dnsmasq(procs, srv, tmp_path, "--port=53", "--local=/example.com/",
                  f"--dhcp-option-force=143,{colon_hex(encode_option_143(URI_143))}",
                  f"--dhcp-option=vendor:nsg,1,{URI_43[0]}",
                  "--dhcp-option=15,example.com", f"--dhcp-option=6,{SERVER_IP}",
                  "--srv-host=_sztp.example.com,bs-b.example.com,9443,20,5",
                  "--srv-host=_sztp.example.com,bs-a.example.com,8443,10,5",
                  "--txt-record=SN1._sztp.example.com,ci=conveyed,oc=owner-cert,ov=voucher")
    wait_until(lambda: udp_listening(srv, 53), "dnsmasq DNS socket")
    sources = [{"kind": "dns"}, {"kind": "dhcp", "interface": "c0"}]  # order given wrongly on purpose

    out = discover_in(client, sources, serial="SN1", collect_all=True)
    assert [(s["uri"], s["source"]) for s in out["servers"][:3]] == [
        (URI_143[0], "dhcp"), (URI_143[1], "dhcp"), (URI_43[0], "dhcp")]
    txt = out["servers"][3]
    assert txt["source"] == "dns" and txt["uri"] == f"dns://{SERVER_IP}/SN1._sztp.example.com?type=TXT"
    assert txt["inline"] == [b"conveyed".hex(), b"owner-cert".hex(), b"voucher".hex()]
    assert (out["domain"], out["nameservers"], out["failures"]) == ("example.com", [SERVER_IP], {})

    out = discover_in(client, sources, serial="SN2", collect_all=True)
    assert [(s["uri"], s["source"]) for s in out["servers"][3:]] == [
        ("https://bs-a.example.com:8443", "dns"), ("https://bs-b.example.com:9443", "dns")]

    # Without collect_all, DHCP's answer ends discovery: DNS is never asked.
    out = discover_in(client, sources, serial="SN2")
    assert len(out["servers"]) == 3 and out["attempts"] == {"dhcp": 1}
    log = (tmp_path / "dnsmasq.log").read_text()
    assert "query[TXT] SN1._sztp.example.com" in log and "query[SRV] _sztp.example.com" in log


def test_hostile_dhcp_server_is_counted_and_skipped(pair, tmp_path):
    """Option 143 with a uri-length beyond the option: a remote fault, and the next source
    (the built-in default) still gets the gateway going."""
    srv, client, procs = pair
    start_dnsmasq(procs, srv, tmp_path, "--port=0", "--dhcp-option-force=143,00:40:68:74:74:70:73")
    out = discover_in(client, [{"kind": "dhcp", "interface": "c0"}, {"kind": "default"}])
    assert [s["source"] for s in out["servers"]] == ["default"]
    assert out["failures"] == {"dhcp": 1}
    assert out["last_error"]["dhcp"].startswith("remote: DHCP option 143: uri-length 64")


def test_removable_media_file_wins_over_dhcp(pair, tmp_path):
    srv, client, procs = pair
    start_dnsmasq(procs, srv, tmp_path, "--port=0",
                  f"--dhcp-option-force=143,{colon_hex(encode_option_143(URI_143))}")
    media = tmp_path / "media"
    media.mkdir()
    doc = {"nsg-bootstrap": 1, "bootstrap-servers": [{"uri": "https://usb.example.net"}],
           "bootstrapping-data": {k: base64.b64encode(k.encode()).decode()
                                  for k in ("conveyed-information", "owner-certificate", "ownership-voucher")}}
    (media / "nsg-bootstrap.json").write_text(json.dumps(doc))
    sources = [{"kind": "dhcp", "interface": "c0"}, {"kind": "file", "dirs": [str(media)]}]

    out = discover_in(client, sources)
    assert [(s["uri"], s["source"]) for s in out["servers"]] == [
        ((media / "nsg-bootstrap.json").as_uri(), "file"), ("https://usb.example.net", "file")]
    assert out["servers"][0]["inline"][2] == b"ownership-voucher".hex()
    assert out["attempts"] == {"file": 1}

    (media / "nsg-bootstrap.json").unlink()
    out = discover_in(client, sources)
    assert [s["uri"] for s in out["servers"]] == URI_143 and out["attempts"] == {"file": 1, "dhcp": 1}


AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=srv0
enable-dbus=no
host-name=nsg-bootstrap-test
[publish]
publish-aaaa-on-ipv4=no
"""

AVAHI_SERVICE = f"""<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>nsg bootstrap</name>
  <service>
    <type>{SERVICE_TYPE.removesuffix('.local.')}</type>
    <port>8443</port>
    <txt-record>path={PATH}</txt-record>
  </service>
</service-group>
"""


def test_mdns_service_published_by_avahi(pair, tmp_path):
    srv, client, procs = pair
    sh("ip", "-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", "c0")
    run, services = tmp_path / "run", tmp_path / "services"
    run.mkdir()
    services.mkdir()
    (services / "sztp.service").write_text(AVAHI_SERVICE)
    (tmp_path / "avahi.conf").write_text(AVAHI_CONF)
    # A private /run and services directory (PEERS.md); exec keeps the pid avahi-daemon's.
    procs.start(["ip", "netns", "exec", srv, "unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount --bind "$1" /run && mount --bind "$2" /etc/avahi/services && exec avahi-daemon -f "$3" '
                 "--no-drop-root --no-chroot --no-rlimits", "sh", str(run), str(services),
                 str(tmp_path / "avahi.conf")], tmp_path / "avahi.log")
    out = discover_in(client, [{"kind": "mdns", "browse_time": 8.0}])
    assert [(s["uri"], s["source"]) for s in out["servers"]] == [(f"https://{SERVER_IP}:8443{PATH}", "mdns")], \
        (tmp_path / "avahi.log").read_text()


def test_fake_imds_command_line_on_loopback(netns_name, tmp_path):
    """The fake IMDS as a lab would run it, on the client namespace's own loopback."""
    user_data = tmp_path / "user-data.json"
    user_data.write_text(json.dumps({"nsg-bootstrap": 1, "bootstrap-servers": [{"uri": "https://cloud.example"}]}))
    procs = Procs()
    try:
        proc = procs.start(["ip", "netns", "exec", netns_name, sys.executable, "-m", "bootstrap.sources.fake_imds",
                            "--listen", "127.0.0.1", "--port", "0", "--user-data", str(user_data),
                            "--instance-id", "i-00000000000000abc"], tmp_path / "imds.log",
                           stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, (tmp_path / "imds.log").read_text()
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:")
        out = discover_in(netns_name, [{"kind": "imds", "url": url}, {"kind": "default"}])
        assert [(s["uri"], s["source"]) for s in out["servers"]] == [("https://cloud.example", "imds")]
        assert out["instance_id"] == "i-00000000000000abc"
    finally:
        procs.stop()

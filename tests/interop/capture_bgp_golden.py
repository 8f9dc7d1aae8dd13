"""Capture golden BGP EVPN messages between real FRR and real GoBGP (run as root).

    .venv/bin/python tests/interop/capture_bgp_golden.py [--out tests/golden/bgp] [--keep]

Namespaces a (FRR: zebra + bgpd, kernel VTEP br100/vx100 VNI 100 with 198.51.100.1/24 on the bridge)
and b (GoBGP), joined by a veth 198.18.70.1/24 -- 198.18.70.2/24, iBGP AS 65000, timers 3/9; a third
namespace h is a host on FRR's bridge (198.51.100.20/24). tcpdump records TCP port 179 on FRR's veth
while:

1. the session comes up (OPEN both ways, KEEPALIVEs), FRR sends its type-3 route (PMSI tunnel);
2. GoBGP injects a MAC+IP route, a MAC-only route and a type-3 route;
3. the host pings the bridge, so FRR learns its MAC (type-2 MAC-only) and neighbor entry (MAC+IP);
4. GoBGP withdraws its MAC+IP route; then bgpd is stopped (NOTIFICATION Cease).

The TCP payload is reassembled per direction in sequence order and split into BGP messages by the
19-octet header (marker, length, type). tshark decodes the same pcap independently; its BGP fields
for each message are stored next to our bytes (after checking message count, type and length agree)
and summarised in ``expect`` (route type, RD, MAC, IP, label/VNI, RTs, next hop, PMSI). Writes
``frr_gobgp.json`` and ``README.md``. Nothing leaves the namespaces; they go away on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.interop.frr import BGPD, BgpNet, Frr, Neighbor, bgp_pair, make_vtep  # noqa: E402
from tests.interop.gobgp import GOBGPD, GoBgp, GoNeighbor  # noqa: E402
from tests.interop.procs import CaptureError, Tcpdump  # noqa: E402

ASN, VNI = 65000, 100
RT = f"{ASN}:{VNI}"
BRIDGE_ADDR, HOST_ADDR = "198.51.100.1/24", "198.51.100.20/24"
BRIDGE_IP, HOST_IP = "198.51.100.1", "198.51.100.20"
GO_MAC_IP = ("02:00:5e:00:53:01", "198.51.100.101")
GO_MAC_ONLY = "02:00:5e:00:53:02"
MARKER = b"\xff" * 16
TYPE_NAMES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}


def run_capture(net: BgpNet, work: Path) -> dict[str, Any]:
    br, _ = make_vtep(net.ns[0], net.addr[0], vni=VNI, bridge_address=BRIDGE_ADDR)
    net.add_host(br, HOST_ADDR)
    frr = Frr(net.ns[0], work / "frr", net.addr[0], ASN, [Neighbor(net.addr[1], ASN)])
    gobgp = GoBgp(net.ns[1], work / "gobgp", net.addr[1], ASN, [GoNeighbor(net.addr[0], ASN)])
    go_rd = f"{net.addr[1]}:{VNI}"
    steps: list[str] = []
    with contextlib.ExitStack() as stack:
        dump = Tcpdump(net.ns[0], net.ifname[0], work / "bgp.pcap", ["tcp", "port", "179"])
        stack.callback(dump.stop)
        stack.enter_context(gobgp)
        stack.enter_context(frr)
        frr.wait_established(net.addr[1])
        gobgp.wait_established(net.addr[0])
        steps.append("session established")
        gobgp.wait_route(lambda p: p["nlri"]["type"] == 3, what="FRR's type-3 in GoBGP")
        steps.append("FRR type-3 received by GoBGP")

        gobgp.add_macadv(*GO_MAC_IP, rd=go_rd, rt=RT, label=VNI, nexthop=net.addr[1])
        frr.wait_route(lambda r: r.get("mac") == GO_MAC_IP[0], what="GoBGP MAC+IP in FRR")
        gobgp.add_macadv(GO_MAC_ONLY, "0.0.0.0", rd=go_rd, rt=RT, label=VNI, nexthop=net.addr[1])
        frr.wait_route(lambda r: r.get("mac") == GO_MAC_ONLY, what="GoBGP MAC-only in FRR")
        gobgp.add_multicast(net.addr[1], rd=go_rd, rt=RT, vni=VNI, nexthop=net.addr[1])
        frr.wait_route(lambda r: r.get("routeType") == 3 and r.get("ip") == net.addr[1], what="GoBGP type-3 in FRR")
        steps.append("GoBGP injected MAC+IP, MAC-only, type-3")

        ping = net.exec(net.host_ns or "", "ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", BRIDGE_IP)
        if ping.returncode != 0:
            raise CaptureError(f"host ping failed: {ping.stdout}{ping.stderr}")
        gobgp.wait_route(lambda p: p["nlri"]["type"] == 2 and p["nlri"]["value"].get("ip") == HOST_IP,
                         what="FRR's MAC+IP of the host in GoBGP")
        steps.append("FRR originated the host's MAC and MAC+IP")

        gobgp.del_macadv(*GO_MAC_IP, rd=go_rd, label=VNI)
        frr.wait_for(lambda f: not any(r.get("mac") == GO_MAC_IP[0] for r in f.evpn_routes()), what="withdrawal")
        steps.append("GoBGP withdrew its MAC+IP route")
        time.sleep(3.5)  # one more keepalive interval, so KEEPALIVEs after the UPDATEs are on the wire too
        frr.stop()
        time.sleep(0.5)
        steps.append("bgpd stopped")
        dump.stop()
    return {"pcap": work / "bgp.pcap", "steps": steps}


# ------------------------------------------------------------------------------------------------
# pcap -> BGP messages
# ------------------------------------------------------------------------------------------------

def tcp_streams(pcap: Path) -> dict[tuple[str, int, str, int], list[tuple[int, int, bytes]]]:
    """(src, sport, dst, dport) -> [(seq, frame number, payload)] of every TCP segment with payload."""
    from scapy.all import IP, TCP, rdpcap

    streams: dict[tuple[str, int, str, int], list[tuple[int, int, bytes]]] = {}
    for frame, p in enumerate(rdpcap(str(pcap)), start=1):
        if IP in p and TCP in p and len(p[TCP].payload):
            key = (p[IP].src, p[TCP].sport, p[IP].dst, p[TCP].dport)
            streams.setdefault(key, []).append((p[TCP].seq, frame, bytes(p[TCP].payload)))
    return streams


def reassemble(segments: list[tuple[int, int, bytes]]) -> tuple[bytes, list[tuple[int, int]]]:
    """In-order byte stream of one direction (retransmissions dropped) and (stream offset, frame) marks."""
    segments = sorted(segments, key=lambda s: (s[0], s[1]))
    base = segments[0][0]
    data = bytearray()
    marks: list[tuple[int, int]] = []
    for seq, frame, payload in segments:
        off = (seq - base) % (1 << 32)
        if off > len(data):
            raise CaptureError(f"gap in TCP stream at offset {len(data)} (next segment at {off})")
        new = payload[len(data) - off:]
        if new:
            marks.append((len(data), frame))
            data += new
    return bytes(data), marks


def split_messages(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    off = 0
    while off < len(data):
        if len(data) - off < 19 or data[off:off + 16] != MARKER:
            raise CaptureError(f"no BGP header at stream offset {off}")
        length = int.from_bytes(data[off + 16:off + 18], "big")
        if not 19 <= length <= 4096 or off + length > len(data):
            raise CaptureError(f"bad BGP length {length} at offset {off}")
        out.append((off, data[off:off + length]))
        off += length
    return out


def frame_of(marks: list[tuple[int, int]], end_offset: int) -> int:
    """Frame that carried the last byte of a message (where tshark shows the reassembled message)."""
    frame = marks[0][1]
    for off, f in marks:
        if off <= end_offset:
            frame = f
    return frame


def tshark_messages(pcap: Path) -> list[dict[str, Any]]:
    """tshark's BGP messages in capture order: {"frame", "src", "bgp": the bgp subtree of one message}."""
    proc = subprocess.run(["tshark", "-r", str(pcap), "-T", "json", "--no-duplicate-keys", "-Y", "bgp",
                           "-o", "tcp.desegment_tcp_streams:TRUE", "-d", "tcp.port==179,bgp"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CaptureError(f"tshark failed: {proc.stderr}")
    out: list[dict[str, Any]] = []
    for pkt in json.loads(proc.stdout):
        layers = pkt["_source"]["layers"]
        frame = int(layers["frame"]["frame.number"])
        bgp = layers["bgp"]
        for b in bgp if isinstance(bgp, list) else [bgp]:
            out.append({"frame": frame, "src": layers["ip"]["ip.src"], "bgp": b})
    return out


def _find(tree: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in a tshark JSON subtree (depth first, in order)."""
    found: list[Any] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                found.extend(v if isinstance(v, list) else [v])
            found.extend(_find(v, key))
    elif isinstance(tree, list):
        for v in tree:
            found.extend(_find(v, key))
    return found


def _first(tree: Any, key: str) -> Any:
    vals = _find(tree, key)
    return vals[0] if vals else None


def rd_text(raw: str | None) -> str | None:
    """tshark shows an RD as 8 raw octets "00:01:c6:12:46:01:00:02"; render RFC 4364 types 0/1/2 as text."""
    if raw is None:
        return None
    b = bytes.fromhex(raw.replace(":", ""))
    kind = int.from_bytes(b[:2], "big")
    if kind == 0:
        return f"{int.from_bytes(b[2:4], 'big')}:{int.from_bytes(b[4:], 'big')}"
    if kind == 1:
        return f"{'.'.join(str(x) for x in b[2:6])}:{int.from_bytes(b[6:], 'big')}"
    return f"{int.from_bytes(b[2:6], 'big')}:{int.from_bytes(b[6:], 'big')}"


def summarise(bgp: dict[str, Any]) -> dict[str, Any]:
    """What the message should decode to, read from tshark's fields only (plus RD bytes rendered as text)."""
    mtype = int(bgp["bgp.type"])
    s: dict[str, Any] = {"type": mtype, "length": int(bgp["bgp.length"])}
    if mtype == 1:
        s.update({"version": int(_first(bgp, "bgp.open.version")), "my_as": int(_first(bgp, "bgp.open.myas")),
                  "hold_time": int(_first(bgp, "bgp.open.holdtime")), "bgp_id": _first(bgp, "bgp.open.identifier"),
                  "capabilities": [int(c) for c in _find(bgp, "bgp.cap.type")],
                  "mp_afi_safi": [[int(a), int(x)] for a, x in zip(_find(bgp, "bgp.cap.mp.afi"),
                                                                   _find(bgp, "bgp.cap.mp.safi"), strict=False)],
                  "four_octet_as": _maybe_int(_first(bgp, "bgp.cap.4as"))})
    elif mtype == 3:
        s.update({"major": _maybe_int(_first(bgp, "bgp.notify.major_error")),
                  "minor": _maybe_int(_first(bgp, "bgp.notify.minor_error_cease"))})
    elif mtype == 2:
        routes = []
        for evpn in _evpn_nodes(bgp):
            r: dict[str, Any] = {"route_type": int(evpn["bgp.evpn.nlri.rt"]), "withdrawn": evpn["_withdrawn"],
                                 "nlri_length": _maybe_int(evpn.get("bgp.evpn.nlri.len")),
                                 "rd_raw": evpn.get("bgp.evpn.nlri.rd"), "rd": rd_text(evpn.get("bgp.evpn.nlri.rd")),
                                 "etag": _maybe_int(evpn.get("bgp.evpn.nlri.etag")),
                                 "ip_len": _maybe_int(evpn.get("bgp.evpn.nlri.iplen")),
                                 "ip": evpn.get("bgp.evpn.nlri.ip.addr")}
            if r["route_type"] == 2:
                r.update({"esi": evpn.get("bgp.evpn.nlri.esi"), "mac_len": _maybe_int(evpn.get("bgp.evpn.nlri.maclen")),
                          "mac": evpn.get("bgp.evpn.nlri.mac_addr"),
                          # tshark reads the 3-octet label field as an MPLS label (top 20 bits): VNI >> 4
                          "label1_mpls": _maybe_int(evpn.get("bgp.evpn.nlri.mpls_ls1"))})
            routes.append(r)
        s["routes"] = routes
        s["next_hop"] = _first(bgp, "bgp.update.path_attribute.mp_reach_nlri.next_hop.ipv4")
        s["origin"] = _maybe_int(_first(bgp, "bgp.update.path_attribute.origin"))
        s["local_pref"] = _maybe_int(_first(bgp, "bgp.update.path_attribute.local_pref"))
        s["attribute_types"] = [int(t) for t in _find(bgp, "bgp.update.path_attribute.type_code")]
        s["route_targets"] = [f"{a}:{n}" for a, n in zip(_find(bgp, "bgp.ext_com.value_as2"),
                                                        _find(bgp, "bgp.ext_com.value_an4"), strict=False)]
        s["encapsulation"] = _maybe_int(_first(bgp, "bgp.ext_com.tunnel_type"))
        if _first(bgp, "bgp.update.path_attribute.pmsi.tunnel.type") is not None:
            s["pmsi"] = {"flags": _maybe_int(_first(bgp, "bgp.update.path_attribute.pmsi.tunnel.flags")),
                         "tunnel_type": _maybe_int(_first(bgp, "bgp.update.path_attribute.pmsi.tunnel.type")),
                         "vni": _maybe_int(_first(bgp, "bgp.evpn.nlri.vni")),
                         "tunnel_id": _first(bgp, "bgp.update.path_attribute.pmsi.ingress_rep_ip")}
    return s


def _maybe_int(v: Any) -> int | None:
    try:
        return int(v, 0) if isinstance(v, str) else (int(v) if v is not None else None)
    except ValueError:
        return None


def _evpn_nodes(tree: Any, withdrawn: bool = False) -> list[dict[str, Any]]:
    """Dicts that hold one EVPN NLRI (bgp.evpn.nlri.rt), tagged with whether they sit under MP_UNREACH_NLRI."""
    nodes: list[dict[str, Any]] = []
    if isinstance(tree, dict):
        if "bgp.evpn.nlri.rt" in tree:
            nodes.append({**tree, "_withdrawn": withdrawn})
        for k, v in tree.items():
            nodes.extend(_evpn_nodes(v, withdrawn or k == "bgp.update.path_attribute.mp_unreach_nlri"))
    elif isinstance(tree, list):
        for v in tree:
            nodes.extend(_evpn_nodes(v, withdrawn))
    return nodes


def describe(s: dict[str, Any]) -> str:
    name = TYPE_NAMES.get(s["type"], str(s["type"]))
    if s["type"] == 1:
        return (f"OPEN AS {s['my_as']} hold {s['hold_time']} id {s['bgp_id']}, capabilities {s['capabilities']}, "
                f"multiprotocol {s['mp_afi_safi']}")
    if s["type"] == 3:
        return f"NOTIFICATION error {s['major']} (Cease) subcode {s['minor']}" if s["major"] == 6 else \
            f"NOTIFICATION error {s['major']} subcode {s['minor']}"
    if s["type"] != 2:
        return name
    if not s["routes"]:
        return "UPDATE without EVPN NLRI"
    parts = []
    for r in s["routes"]:
        what = "withdraw" if r["withdrawn"] else "advertise"
        if r["route_type"] == 2:
            ip = f" IP {r['ip']}" if r.get("ip") else " (MAC only)"
            parts.append(f"{what} type-2 RD {r['rd']} MAC {r['mac']}{ip} VNI {VNI} (label field; tshark MPLS "
                         f"label {r.get('label1_mpls')})")
        elif r["route_type"] == 3:
            parts.append(f"{what} type-3 RD {r['rd']} originator {r['ip']}")
        else:
            parts.append(f"{what} type-{r['route_type']}")
    tail = ""
    if s.get("next_hop"):
        tail += f"; next hop {s['next_hop']}"
    if s["route_targets"]:
        tail += f"; RT {', '.join(s['route_targets'])}"
    if s.get("encapsulation") is not None:
        tail += f"; encap {s['encapsulation']}"
    if s.get("pmsi"):
        p = s["pmsi"]
        tail += f"; PMSI tunnel type {p['tunnel_type']} VNI {p['vni']} endpoint {p['tunnel_id']}"
    return "UPDATE: " + "; ".join(parts) + tail


def build(cap: dict[str, Any], net: BgpNet) -> dict[str, Any]:
    pcap = cap["pcap"]
    streams = tcp_streams(pcap)
    ours: list[dict[str, Any]] = []
    for (src, sport, dst, dport), segments in streams.items():
        data, marks = reassemble(segments)
        for off, msg in split_messages(data):
            ours.append({"src": src, "sport": sport, "dst": dst, "dport": dport,
                         "frame": frame_of(marks, off + len(msg) - 1), "offset": off, "bytes": msg})
    ours.sort(key=lambda m: (m["frame"], m["src"], m["offset"]))
    theirs = tshark_messages(pcap)
    if len(ours) != len(theirs):
        raise CaptureError(f"we split {len(ours)} BGP messages, tshark decoded {len(theirs)}")
    sender = {net.addr[0]: "frr", net.addr[1]: "gobgp"}
    messages = []
    for m, t in zip(ours, theirs, strict=True):
        msg = m["bytes"]
        if (m["frame"], m["src"]) != (t["frame"], t["src"]) or int(t["bgp"]["bgp.type"]) != msg[18] \
                or int(t["bgp"]["bgp.length"]) != len(msg):
            raise CaptureError(f"message mismatch: ours frame {m['frame']} {m['src']} type {msg[18]} len {len(msg)}, "
                               f"tshark frame {t['frame']} {t['src']} {t['bgp'].get('bgp.type')}")
        summary = summarise(t["bgp"])
        messages.append({
            "index": len(messages), "frame": m["frame"], "sender": sender[m["src"]],
            "src": f"{m['src']}:{m['sport']}", "dst": f"{m['dst']}:{m['dport']}",
            "type": msg[18], "type_name": TYPE_NAMES.get(msg[18], "UNKNOWN"), "length": len(msg),
            "description": describe(summary), "expect": summary, "hex": msg.hex(), "tshark": t["bgp"],
        })
    return {
        "description": ("BGP messages between FRR (198.18.70.1, zebra+bgpd, advertise-all-vni, VTEP VNI 100) "
                        "and GoBGP (198.18.70.2), iBGP AS 65000, l2vpn evpn only, captured on FRR's veth. hex is "
                        "each whole message (16-octet marker, length, type, body) from the TCP stream reassembled "
                        "per direction; expect/tshark are tshark's independent decoding of the same message "
                        "(label1_mpls is tshark's MPLS reading of the 3-octet label field, i.e. its top 20 bits: "
                        "FRR and GoBGP put the VNI in the whole 24 bits (RFC 8365), so label1_mpls = VNI >> 4; "
                        "tshark shows the PMSI label as the VNI itself; rd is tshark's rd_raw rendered as text)."),
        "frr": net.addr[0], "gobgp": net.addr[1], "asn": ASN, "vni": VNI, "route_target": RT,
        "gobgp_routes": {"mac_ip": list(GO_MAC_IP), "mac_only": GO_MAC_ONLY, "rd": f"{net.addr[1]}:{VNI}"},
        "host": HOST_ADDR, "bridge": BRIDGE_ADDR,
        "steps": cap["steps"], "versions": versions(), "messages": messages,
    }


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else ""

    return {"bgpd": first_line([str(BGPD), "--version"]), "gobgpd": first_line([GOBGPD, "--version"]),
            "tshark": first_line(["tshark", "--version"]), "tcpdump": first_line(["tcpdump", "--version"])}


README = """\
# BGP EVPN golden captures (FRR <-> GoBGP)

`frr_gobgp.json`: every BGP message exchanged between a real FRR and a real GoBGP over one iBGP
session (AS 65000, l2vpn evpn only, timers 3/9), as hex, with the sender, the type, a short
description and tshark's independent decoding (`tshark` = the message's `bgp` subtree from
`tshark -T json --no-duplicate-keys`; `expect` = the fields that matter, read from that subtree).

Messages captured:

{summary}

## How it was made

    {command}

run as root on {date}. Versions: {bgpd}; {gobgpd}; {tshark}; {tcpdump}.

Namespace a runs FRR (zebra + bgpd, `advertise-all-vni`) with a kernel VTEP (bridge br100, vxlan
vx100 id 100 local 198.18.70.1 dstport 4789 nolearning, learning off, 198.51.100.1/24 on the
bridge); namespace b runs gobgpd; namespace h is a host (198.51.100.20/24) on br100. The veth
between a and b carries 198.18.70.1/24 and 198.18.70.2/24; tcpdump (`-U --immediate-mode -w`)
recorded TCP port 179 on a's side. Steps: {steps}.

The TCP payload of each direction was reassembled in sequence order (retransmissions dropped) and
split by the 19-octet BGP header; the script checked that tshark decoded the same number of
messages, in the same frames, with the same types and lengths. Route distinguishers, MACs of the
bridge and host, and timing-dependent message grouping change on every run: tests should read
values from the JSON, not hard-code them. `tests/interop/test_bgp_golden_files.py` checks the file.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "golden" / "bgp")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, pcap)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("capture_bgp_golden.py needs root (network namespaces)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="nsg-bgp-golden-"))
    try:
        with bgp_pair(host=True) as net:
            cap = run_capture(net, work)
        doc = build(cap, net)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "frr_gobgp.json").write_text(json.dumps(doc, indent=1) + "\n")
        summary = "\n".join(f"{m['index']:2}. {m['sender']:5} {m['type_name']:12} {m['length']:4} B  {m['description']}"
                            for m in doc["messages"])
        v = doc["versions"]
        (args.out / "README.md").write_text(README.format(
            summary="```\n" + summary + "\n```", command=".venv/bin/python tests/interop/capture_bgp_golden.py",
            date=datetime.date.today().isoformat(), steps="; ".join(doc["steps"]), **v))
        print(summary)
        print(f"wrote frr_gobgp.json and README.md to {args.out}")
        return 0
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

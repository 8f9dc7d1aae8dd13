"""Capture golden IKEv2 / ESP-in-UDP exchanges between two real strongSwan charons (run as root).

    .venv/bin/python tests/interop/capture_golden.py [--out tests/golden/strongswan] [--keep]

Two namespaces joined by a veth, charon (kernel-libipsec) on both sides, PSK, ``encap = yes`` so ESP
rides in UDP 4500 from the first packet. Both charons log at ``ike 4``/``chd 4``, where they print the
IKE SA keys and the CHILD_SA keys. tcpdump records the veth (ciphertext) and the initiator's ``ipsec0``
TUN device (the same packets in plaintext). Three pings go inner-to-inner. The script then writes

- ike_sa_init.json  - IKE_SA_INIT request/response UDP payloads,
- ike_auth_psk.json - IKE_AUTH request/response (non-ESP marker stripped) and the IKE SA secrets,
- esp_in_udp.json   - per direction: SPI, AES-GCM key and salt, the ESP-in-UDP payloads with sequence
                      numbers, and the plaintext inner packets they carry,

after checking every ESP packet decrypts (AES-GCM, RFC 4106) to the packet seen on ipsec0 and that both
charons logged the same keys. Nothing leaves the namespaces; they and the processes go away on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.interop.procs import CaptureError, Tcpdump  # noqa: E402
from tests.interop.strongswan import (  # noqa: E402
    CHARON,
    KEY_LOG_LEVELS,
    Charon,
    Child,
    Connection,
    PeerNet,
    two_peers,
)

IKE, CHILD = "gw", "net"
PSK = "nsg-golden-capture-psk-not-secret"
PINGS = 3
NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 section 2.2
IKE_SA_INIT, IKE_AUTH = 34, 35  # RFC 7296 section 3.1 exchange types
FLAG_RESPONSE = 0x20


# ------------------------------------------------------------------------------------------------
# charon log parsing: "<time> <thread>[<group>] <ike|n> <label> => <n> bytes @ 0x..." then hex dump lines
# ------------------------------------------------------------------------------------------------

_LINE = re.compile(r"^(?P<time>\S+) (?P<thread>\d+)\[(?P<group>\w+)\] (?:<[^>]*> )?(?P<msg>.*)$")
_HEADER = re.compile(r"^(?P<label>.+?) => (?P<len>\d+) bytes @ 0x[0-9a-f]+$")
_DUMP = re.compile(r"^\s+(?P<off>\d+): (?P<hex>(?:[0-9A-F]{2} ?)+)")


def parse_dumps(log: str) -> list[tuple[str, bytes, list[str]]]:
    """All ``%B`` chunk dumps in order: (label, bytes, the exact log lines they were read from)."""
    out: list[tuple[str, bytes, list[str]]] = []
    open_dumps: dict[str, tuple[str, int, bytearray, list[str]]] = {}  # per thread
    for raw in log.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        thread, msg = m["thread"], m["msg"]
        pending = open_dumps.get(thread)
        d = _DUMP.match(msg)
        if pending and d:
            label, length, data, lines = pending
            data += bytes.fromhex(d["hex"].split("  ")[0])
            lines.append(raw)
            if len(data) >= length:
                out.append((label, bytes(data[:length]), lines))
                del open_dumps[thread]
            continue
        h = _HEADER.match(msg)
        if h:
            open_dumps[thread] = (h["label"], int(h["len"]), bytearray(), [raw])
            if int(h["len"]) == 0:
                out.append((h["label"], b"", [raw]))
                del open_dumps[thread]
    return out


def first_dump(dumps: list[tuple[str, bytes, list[str]]], label: str) -> tuple[bytes, list[str]]:
    for name, data, lines in dumps:
        if name == label:
            return data, lines
    raise CaptureError(f"charon log has no '{label}' dump (log levels {KEY_LOG_LEVELS} expected)")


def logged_spis(log: str) -> dict[str, tuple[str, list[str]]]:
    """'inbound'/'outbound' -> (SPI hex, lines) from 'adding inbound ESP SA' + the 'SPI 0x..' line after it."""
    found: dict[str, tuple[str, list[str]]] = {}
    lines = log.splitlines()
    for i, raw in enumerate(lines):
        for direction in ("inbound", "outbound"):
            if raw.endswith(f"adding {direction} ESP SA") and direction not in found:
                nxt = lines[i + 1]
                m = re.search(r"SPI 0x([0-9a-f]{8})", nxt)
                if not m:
                    raise CaptureError(f"no SPI after: {raw}")
                found[direction] = (m[1], [raw, nxt])
    return found


def run_capture(net: PeerNet, work: Path) -> dict:
    conns = [Connection(IKE, remote_addrs=(net.ike[1 - i],), local_id=net.ike[i], remote_id=net.ike[1 - i],
                        psk=PSK, encap=True,
                        children=(Child(CHILD, (f"{net.inner[i]}/32",), (f"{net.inner[1 - i]}/32",)),))
             for i in (0, 1)]
    charons = [Charon(net.ns[i], work / "ab"[i], net.ike[i], name="ab"[i], log_keys=True) for i in (0, 1)]
    for c, conn in zip(charons, conns, strict=True):
        c.add(conn)
    dumps: list[Tcpdump] = []
    with contextlib.ExitStack() as stack:
        for c in charons:
            stack.enter_context(c)
        stack.callback(lambda: [d.stop() for d in dumps])
        dumps.append(Tcpdump(net.ns[0], net.ifname[0], work / "wire.pcap", ["udp"]))
        dumps.append(Tcpdump(net.ns[0], "ipsec0", work / "tun.pcap", ["icmp"]))
        charons[0].initiate(CHILD, IKE)
        ike_a, child_a = charons[0].wait_established(IKE, CHILD)
        charons[1].wait_established(IKE, CHILD)
        r = net.ping(0, PINGS)
        if r.returncode != 0:
            raise CaptureError(f"ping through the tunnel failed: {r.stdout}{r.stderr}")
        time.sleep(0.3)
        for d in dumps:
            d.stop()
    return {"ike_sa": ike_a, "child_sa": child_a,
            "logs": [c.log_path.read_text() for c in charons],
            "wire": work / "wire.pcap", "tun": work / "tun.pcap"}


# ------------------------------------------------------------------------------------------------
# turning the capture into golden files
# ------------------------------------------------------------------------------------------------

def esp_decrypt(key: bytes, salt: bytes, esp: bytes) -> tuple[int, bytes, int]:
    """(seq, inner packet, next header) of an AES-GCM-16 ESP packet (RFC 4106: nonce salt|IV, AAD SPI|seq)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seq = struct.unpack("!I", esp[4:8])[0]
    plain = AESGCM(key).decrypt(salt + esp[8:16], esp[16:], esp[:8])
    pad_len, next_header = plain[-2], plain[-1]
    return seq, plain[: len(plain) - 2 - pad_len], next_header


def build(cap: dict, net: PeerNet) -> dict[str, dict]:
    from scapy.all import IP, UDP, rdpcap

    log_a, log_b = cap["logs"]
    dumps_a, dumps_b = parse_dumps(log_a), parse_dumps(log_b)
    # the first dumps of each label belong to the initial IKE SA and its CHILD_SA (nothing is rekeyed here)
    labels = ["shared Diffie Hellman secret", "SKEYSEED", "Sk_d secret", "Sk_ei secret", "Sk_er secret",
              "Sk_pi secret", "Sk_pr secret", "encryption initiator key", "encryption responder key"]
    secrets = {label: first_dump(dumps_a, label) for label in labels}
    for label in labels:
        if first_dump(dumps_b, label)[0] != secrets[label][0]:
            raise CaptureError(f"initiator and responder logged different '{label}'")

    udp = [(p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport, bytes(p[UDP].payload))
           for p in rdpcap(str(cap["wire"])) if UDP in p]
    init = [u for u in udp if u[1] == 500 and u[3] == 500 and len(u[4]) >= 28 and u[4][18] == IKE_SA_INIT]
    auth = [u for u in udp if u[3] == 4500 and u[4][:4] == NON_ESP_MARKER and u[4][4 + 18] == IKE_AUTH]
    esp = [u for u in udp if u[3] == 4500 and len(u[4]) > 16 and u[4][:4] != NON_ESP_MARKER]
    if len(init) != 2 or len(auth) != 2:
        raise CaptureError(f"expected one IKE_SA_INIT and one IKE_AUTH exchange, got {len(init)} and {len(auth)}")
    for req, resp in (init, [(a[0], a[1], a[2], a[3], a[4][4:]) for a in auth]):
        if req[4][19] & FLAG_RESPONSE or not resp[4][19] & FLAG_RESPONSE:
            raise CaptureError("request/response order in the capture is not as expected")

    def endpoint(u: tuple, idx: int) -> dict:
        return {"address": u[0 + 2 * idx], "port": u[1 + 2 * idx]}

    version = subprocess.run([CHARON, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    common = {"strongswan": version, "ike_proposal": "aes128gcm16-prfsha256-ecp256",
              "esp_proposal": "aes128gcm16-ecp256"}
    ike_sa = cap["ike_sa"]
    ike_sa_init = {
        **common,
        "description": "IKE_SA_INIT request and response, UDP payloads exactly as captured on the veth (port 500)",
        "initiator": endpoint(init[0], 0), "responder": endpoint(init[0], 1),
        "initiator_spi": ike_sa["initiator-spi"], "responder_spi": ike_sa["responder-spi"],
        "request": init[0][4].hex(), "response": init[1][4].hex(),
    }

    def secret(label: str) -> dict:
        data, lines = secrets[label]
        return {"hex": data.hex(), "log_lines": lines}

    def split_gcm(label: str) -> dict:
        data, lines = secrets[label]
        return {"key": data[:16].hex(), "salt": data[16:].hex(), "log_lines": lines}

    ike_auth = {
        **common,
        "description": ("IKE_AUTH request and response (PSK), UDP payloads captured on port 4500 with the 4-byte "
                        "non-ESP marker (RFC 3948 2.2) stripped: each starts with the IKE header. The secrets come "
                        "from the initiator's charon log at ike=4 (the responder logged the same bytes). AES-GCM "
                        "is AEAD, so there are no SK_ai/SK_ar; SK_ei/SK_er are 16-byte key + 4-byte salt "
                        "(RFC 5282)."),
        "non_esp_marker_stripped": True,
        "initiator": endpoint(auth[0], 0), "responder": endpoint(auth[0], 1),
        "initiator_spi": ike_sa["initiator-spi"], "responder_spi": ike_sa["responder-spi"],
        "initiator_id": net.ike[0], "responder_id": net.ike[1], "psk": PSK.encode().hex(),
        "request": auth[0][4][4:].hex(), "response": auth[1][4][4:].hex(),
        "keys": {"dh_shared_secret": secret("shared Diffie Hellman secret"), "skeyseed": secret("SKEYSEED"),
                 "sk_d": secret("Sk_d secret"), "sk_ei": split_gcm("Sk_ei secret"),
                 "sk_er": split_gcm("Sk_er secret"), "sk_pi": secret("Sk_pi secret"),
                 "sk_pr": secret("Sk_pr secret")},
    }

    # plaintext as seen on the initiator's ipsec0: requests leave it, replies come out of it
    tun = [bytes(p[IP]) for p in rdpcap(str(cap["tun"])) if IP in p]
    spis = logged_spis(log_a)
    child = cap["child_sa"]
    if (spis["outbound"][0], spis["inbound"][0]) != (child["spi-out"], child["spi-in"]):
        raise CaptureError(f"log SPIs {spis} disagree with list-sas {child}")
    directions = {}
    for name, src, spi_key, key_label in (("initiator_to_responder", 0, "outbound", "encryption initiator key"),
                                          ("responder_to_initiator", 1, "inbound", "encryption responder key")):
        spi = spis[spi_key][0]
        pkts = [u for u in esp if u[0] == net.ike[src] and u[4][:4].hex() == spi]
        inner = [t for t in tun if IP(t).src == net.inner[src]]
        if len(pkts) != PINGS or len(inner) != PINGS:
            raise CaptureError(f"{name}: {len(pkts)} ESP packets and {len(inner)} plaintext packets, want {PINGS}")
        gcm = split_gcm(key_label)
        key, salt = bytes.fromhex(gcm["key"]), bytes.fromhex(gcm["salt"])
        packets = []
        for u, plain in zip(pkts, inner, strict=True):
            seq, decrypted, nh = esp_decrypt(key, salt, u[4])
            if decrypted != plain or nh != 4:
                raise CaptureError(f"{name}: ESP seq {seq} does not decrypt to the packet seen on ipsec0")
            packets.append({"seq": seq, "udp_payload": u[4].hex(), "inner": plain.hex()})
        directions[name] = {
            "src": {"address": pkts[0][0], "port": pkts[0][1]}, "dst": {"address": pkts[0][2], "port": pkts[0][3]},
            "spi": spi, "key": gcm["key"], "salt": gcm["salt"],
            "comment": ("key/salt = first 16 / last 4 bytes of the charon log dump below (chd=4); the SPI from "
                        f"the 'adding {spi_key} ESP SA' lines of the initiator's log"),
            "log_lines": gcm["log_lines"] + spis[spi_key][1],
            "packets": packets,
        }
    esp_doc = {
        **common,
        "description": ("ESP in UDP (RFC 3948) with AES-GCM-16/128 (RFC 4106), tunnel mode, for three pings "
                        f"{net.inner[0]} -> {net.inner[1]}. udp_payload is the UDP payload as captured (SPI first; "
                        "no non-ESP marker); inner is the plaintext IPv4 packet captured on the initiator's "
                        "ipsec0 TUN device, which each payload decrypts to (nonce = salt|IV, AAD = SPI|seq, "
                        "ICV 16 bytes, trailer next header 4)."),
        "initiator": {"ike": net.ike[0], "inner": net.inner[0]},
        "responder": {"ike": net.ike[1], "inner": net.inner[1]},
        "directions": directions,
    }
    return {"ike_sa_init.json": ike_sa_init, "ike_auth_psk.json": ike_auth, "esp_in_udp.json": esp_doc}


README = """\
# strongSwan golden captures

Real IKEv2 and ESP-in-UDP traffic between two strongSwan charons, kept as hex in JSON so codec tests
can parse and decrypt it without root or a running peer.

- `ike_sa_init.json`: the IKE_SA_INIT request and response (UDP 500 payloads, byte for byte).
- `ike_auth_psk.json`: the IKE_AUTH request and response (UDP 4500 payloads with the four zero bytes
  of the non-ESP marker removed), the PSK, and the IKE SA secrets charon printed (DH shared secret,
  SKEYSEED, SK_d, SK_ei/SK_er split into AES-GCM key and salt, SK_pi/SK_pr) with the log lines they
  were read from.
- `esp_in_udp.json`: per direction the SPI, AES-GCM-128 key and salt, and the ESP-in-UDP payloads of
  three pings with their sequence numbers, each with the plaintext IPv4 packet it carries.

## How they were made

    {command}

run as root on {date}; `charon --version`: {version}; Debian packages:

{packages}

The script puts each charon in its own network namespace (two namespaces joined by a veth;
IKE addresses {ike0} and {ike1}, inner addresses {in0} and {in1} on `lo` as the traffic
selectors), uses kernel-libipsec so ESP runs in userspace over the TUN device `ipsec0`, PSK
authentication, `encap = yes` (UDP encapsulation from the start: charon sends a bogus NAT-D hash so
both ends act as if behind a NAT), proposals `aes128gcm16-prfsha256-ecp256` and `aes128gcm16-ecp256`.

Keys: with the filelog levels `ike = 4` and `chd = 4` charon prints the IKE SA secrets
(`Sk_ei secret => 20 bytes ...`) and the CHILD_SA keys (`encryption initiator key`,
`encryption responder key`) as hex dumps; the SPIs come from the `adding inbound/outbound ESP SA`
lines. The initiator key protects initiator-to-responder traffic.

tcpdump recorded the initiator's veth (ciphertext) and its `ipsec0` (plaintext). Before writing,
the script decrypted every ESP packet with the logged key and salt and compared the result with the
packet seen on `ipsec0`, and checked that both charons logged identical secrets.
`tests/interop/test_golden_files.py` repeats the ESP check (also with scapy's independent ESP code),
re-derives the IKE keys from the captured nonces and DH secret (RFC 7296 2.14), decrypts IKE_AUTH
and checks the PSK AUTH payloads (RFC 7296 2.15).

The keys are throwaway lab keys; nothing here is secret. Running the script again produces new
random keys and SPIs, so tests must read the values from these files, not hard-code them.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "golden" / "strongswan")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, pcaps)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("capture_golden.py needs root (network namespaces)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="nsg-golden-"))
    try:
        with two_peers() as net:
            cap = run_capture(net, work)
            docs = build(cap, net)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (args.out / name).write_text(json.dumps(doc, indent=2) + "\n")
        pkgs = subprocess.run(["dpkg-query", "-W", "-f", "- ${Package} ${Version}\n", "strongswan-charon",
                               "strongswan-swanctl", "libcharon-extra-plugins"],
                              capture_output=True, text=True, check=False).stdout.strip()
        (args.out / "README.md").write_text(README.format(
            command=".venv/bin/python tests/interop/capture_golden.py", date=datetime.date.today().isoformat(),
            version=docs["esp_in_udp.json"]["strongswan"], packages=pkgs, ike0=net.ike[0], ike1=net.ike[1],
            in0=net.inner[0], in1=net.inner[1]))
        print(f"wrote {', '.join(sorted(docs))} and README.md to {args.out}")
        return 0
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

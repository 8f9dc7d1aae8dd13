"""Golden ESP-in-UDP packets captured from strongSwan 5.9.8 (tests/golden/strongswan): our codec
decrypts them to the exact inner packets and rejects their replay.
(strongSwan picks IVs its own way, so the reverse direction is checked against scapy in test_esp.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipsec.esp import InboundSA, ReplayDrop
from ipsec.natt import Kind, classify

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "strongswan" / "esp_in_udp.json").read_text())
DIRECTIONS = sorted(GOLDEN["directions"])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_strongswan_packets_decrypt(direction):
    d = GOLDEN["directions"][direction]
    # strongSwan 5.9 negotiates no ESN by default (esp_proposals without "esn")
    sa = InboundSA(int(d["spi"], 16), bytes.fromhex(d["key"]), bytes.fromhex(d["salt"]), esn=False)
    assert d["packets"]
    for p in d["packets"]:
        payload = bytes.fromhex(p["udp_payload"])
        assert classify(payload) is Kind.ESP
        nh, inner = sa.open(payload)
        assert nh == 4 and inner == bytes.fromhex(p["inner"])
    with pytest.raises(ReplayDrop):
        sa.open(bytes.fromhex(d["packets"][0]["udp_payload"]))

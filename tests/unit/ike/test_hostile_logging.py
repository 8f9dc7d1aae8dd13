"""Unauthenticated IKE_SA_INITs that a responder refuses: counted per reason, logged a few at a
time under the datagram's real source (never under the peering the address lookup guessed),
summarised after that; the live IKE SA is not touched."""

from __future__ import annotations

import asyncio
import logging
import random

from ipsec.ike import events as ev
from ipsec.ike.constants import ExchangeType, HeaderFlag, NotifyType, ProtocolId, TransformType
from ipsec.ike.context import ZERO_SPI
from ipsec.ike.driver import IkeDriver
from ipsec.ike.message import Message
from ipsec.ike.payloads import KE, SA, Nonce, Proposal, Transform
from ipsec.ike.sa import State
from tests.unit.ike.test_manager import managers, wire

TEST_NETS = ("192.0.2", "198.51.100", "203.0.113")


def bad_init(kind: int, rnd: random.Random) -> bytes:
    """An IKE_SA_INIT we must refuse: unsupported transforms (3DES, SHA-1, MODP-2048), an ESP
    proposal where IKE belongs, a good proposal with a KE for another group, or no nonce."""
    ecp256 = (Transform.with_key_length(TransformType.ENCR, 20, 128), Transform(TransformType.PRF, 5),
              Transform(TransformType.DH, 19))
    nonce = Nonce(rnd.randbytes(32))
    if kind == 0:
        old = (Transform(TransformType.ENCR, 3), Transform(TransformType.PRF, 2), Transform(TransformType.INTEG, 2),
               Transform(TransformType.DH, 14))
        payloads = (SA((Proposal(1, ProtocolId.IKE, b"", old),)), KE(14, rnd.randbytes(256)), nonce)
    elif kind == 1:
        payloads = (SA((Proposal(1, ProtocolId.ESP, b"", ecp256),)), KE(19, rnd.randbytes(64)), nonce)
    elif kind == 2:
        payloads = (SA((Proposal(1, ProtocolId.IKE, b"", ecp256),)), KE(31, rnd.randbytes(32)), nonce)
    else:
        payloads = (SA((Proposal(1, ProtocolId.IKE, b"", ecp256),)), KE(19, rnd.randbytes(64)))
    return Message(rnd.randbytes(8), ZERO_SPI, ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0,
                   payloads).encode()


def spoofed(rnd: random.Random) -> tuple[str, int]:
    return f"{rnd.choice(TEST_NETS)}.{rnd.randrange(1, 255)}", rnd.choice((500, 4500, rnd.randrange(1024, 65536)))


class FakeNat:
    def __init__(self):
        self.sent = []

    def send_ike(self, message, peer, sock=0):
        self.sent.append((message, peer))

    def send_keepalive(self, peer, sock=0):
        pass


class FakeInstaller:
    def install(self, peer, child, outbound):
        pass

    def activate(self, peer, child_id):
        pass

    def remove(self, peer, child_id, in_spi, out_spi):
        pass


def test_refusal_is_tagged_with_the_source_not_a_peer():
    _a, b = managers()
    rnd = random.Random(1)
    src = ("203.0.113.7", 4321)
    out = b.datagram(bad_init(0, rnd), src, 500)
    sends = [c for _p, c in out if isinstance(c, ev.Send)]
    assert len(sends) == 1 and sends[0].peer == src  # the error answer (2.21.1) goes where it came from
    assert Message.decode(sends[0].data).notify(NotifyType.NO_PROPOSAL_CHOSEN) is not None
    # nothing about the passive peering "a": the refusal is no event of that peering
    assert not [c for p, c in out if p == "a" and isinstance(c, ev.Closed)]
    assert b.counters["refused.IKE_SA_INIT.NO_PROPOSAL_CHOSEN"] == 1
    assert b.peers["a"].sa is None and not b.half_open


def test_flood_logs_few_lines_counts_reasons_and_leaves_the_sa_alone(caplog):
    a, b = managers()
    wire(a, b, a.timer("b", "reconnect"))
    live = b.peers["a"].sa
    assert live.state is State.ESTABLISHED
    rnd = random.Random(7)
    sources = [spoofed(rnd) for _ in range(1000)]

    async def main():
        driver = IkeDriver(b, FakeNat(), FakeInstaller(), "127.0.0.1")
        with caplog.at_level(logging.DEBUG, logger="ipsec"):
            for i, src in enumerate(sources):
                driver.datagram(bad_init(i % 4, rnd), src, 500)
        driver.close()

    asyncio.run(main())
    lines = [r for r in caplog.records if r.name.startswith("ipsec") and r.levelno >= logging.INFO]
    assert len(lines) <= 3, [r.getMessage() for r in lines]
    named = {f"{ip}:{port}" for ip, port in sources}
    for r in lines:
        fields = getattr(r, "fields", {})
        assert fields.get("src") in named and "peer" not in fields, (r.getMessage(), fields)
    refused = {k: v for k, v in b.counters.items() if k.startswith("refused.")}
    assert sum(refused.values()) == 1000, refused
    assert refused["refused.IKE_SA_INIT.NO_PROPOSAL_CHOSEN"] == 500
    assert refused["refused.IKE_SA_INIT.INVALID_KE_PAYLOAD"] == 250
    assert refused["refused.IKE_SA_INIT.INVALID_SYNTAX"] == 250
    assert b.peers["a"].sa is live and live.state is State.ESTABLISHED and live.children


def test_summary_after_the_window(caplog):
    from ipsec.logsummary import LogSummariser

    _a, b = managers()
    rnd = random.Random(3)

    async def main():
        driver = IkeDriver(b, FakeNat(), FakeInstaller(), "127.0.0.1", log_summary=LogSummariser(window=0.2))
        with caplog.at_level(logging.INFO, logger="ipsec"):
            for i in range(300):
                driver.datagram(bad_init(i % 4, rnd), spoofed(rnd), 500)
            await asyncio.sleep(0.4)
        driver.close()

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ipsec")]
    summaries = [m for m in lines if m.startswith("300 refused IKE_SA_INIT from ")]
    assert len(summaries) == 1 and len(lines) <= 4, lines
    assert "in the last 0.2 s" in summaries[0] and "NO_PROPOSAL_CHOSEN 150" in summaries[0]


def test_failed_ike_auth_is_a_refusal_by_source():
    from dataclasses import replace

    from ipsec.ike.manager import Rejected
    from tests.unit.ike.simnet import A_ADDR, psk_policies

    pa, pb = psk_policies()
    a, b = managers(policies=(pa, replace(pb, psk=b"another secret")))
    seen = wire(a, b, a.timer("b", "reconnect"))
    rejected = [c for side, c in seen if side == "b" and isinstance(c, Rejected)]
    assert [(r.exchange, r.reason, r.src[0]) for r in rejected] == [("IKE_AUTH", "AUTHENTICATION_FAILED", A_ADDR[0])]
    assert not [c for side, c in seen if side == "b" and isinstance(c, ev.Closed)]
    assert b.counters["refused.IKE_AUTH.AUTHENTICATION_FAILED"] == 1 and not b.half_open
    # the initiator, which chose its peer, still closes under the peer's name
    assert a.peers["b"].sa.state is State.CLOSED

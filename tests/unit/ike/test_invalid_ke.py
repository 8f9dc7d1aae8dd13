"""INVALID_KE_PAYLOAD in answer to our IKE_SA_INIT (RFC 7296 1.2, 3.10.1): the responder names the
group it wants. Another group we offer: start again in it. One we do not offer: give up and say
so. The very group our KE was in: the responder contradicts itself; give up at once and say that
(retrying in the same group can only get the same answer)."""

from __future__ import annotations

from dataclasses import replace

from ipsec.ike import events as ev
from ipsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from ipsec.ike.message import Message
from ipsec.ike.payloads import KE, Notify
from ipsec.ike.policy import IkeProposal
from ipsec.ike.sa import IkeSa, State
from tests.unit.ike.simnet import A_ADDR, B_ADDR, psk_policies


def start(*groups: int) -> tuple[IkeSa, Message]:
    pa, _ = psk_policies()
    sa = IkeSa(replace(pa, ike=tuple(IkeProposal(dh=g) for g in groups)), A_ADDR, B_ADDR, initiator=True)
    send = next(c for c in sa.initiate() if isinstance(c, ev.Send))
    return sa, Message.decode(send.data)


def invalid_ke(request: Message, group: int) -> bytes:
    return Message(request.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0,
                   (Notify(NotifyType.INVALID_KE_PAYLOAD, group.to_bytes(2, "big")),)).encode()


def test_the_group_we_sent_is_named_as_such():
    sa, req = start(19, 31)
    assert req.get(KE).group == 19
    out = sa.receive(invalid_ke(req, 19), B_ADDR, 500)
    closed = [c for c in out if isinstance(c, ev.Closed)]
    assert closed and sa.state is State.CLOSED, "retried in the group the responder just refused"
    reason = closed[0].reason
    assert "which we do not offer" not in reason, reason
    assert "DH group 19" in reason and "our KE was in that group" in reason, reason
    assert closed[0].fault == "remote"


def test_a_group_we_do_not_offer():
    sa, req = start(19)
    out = sa.receive(invalid_ke(req, 20), B_ADDR, 500)
    [closed] = [c for c in out if isinstance(c, ev.Closed)]
    assert closed.reason == "responder wants DH group 20, which we do not offer (we offer 19)"


def test_another_group_we_offer_is_tried():
    sa, req = start(19, 31)
    out = sa.receive(invalid_ke(req, 31), B_ADDR, 500)
    again = [Message.decode(c.data) for c in out if isinstance(c, ev.Send)]
    assert not [c for c in out if isinstance(c, ev.Closed)]
    assert len(again) == 1 and again[0].get(KE).group == 31

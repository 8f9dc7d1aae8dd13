"""One IKE SA's keys and message-ID bookkeeping (RFC 7296 2.1-2.3).

An IkeSa (sa.py) owns one current context, and during an IKE SA rekey also the
retiring one, until the old SA's delete exchange is over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ipsec.ike import crypto
from ipsec.ike.constants import HeaderFlag
from ipsec.ike.message import Message, seal, unseal
from ipsec.ike.payloads import Payload

ZERO_SPI = bytes(8)

# called with the context, the response and its octets as received (IKE_AUTH signs IKE_SA_INIT's, 2.15)
ResponseHandler = Callable[["Ctx", Message, bytes], None]


@dataclass
class Pending:
    """Our one outstanding request (window size 1, 2.3)."""

    message_id: int
    exchange: int
    data: bytes
    on_response: ResponseHandler
    what: str
    tries: int = 0


@dataclass
class Queued:
    exchange: int
    payloads: tuple[Payload, ...]
    on_response: ResponseHandler
    what: str


@dataclass
class Ctx:
    spi_i: bytes
    spi_r: bytes
    initiator: bool  # we are the original initiator of this IKE SA (the I flag, 3.1)
    prf: crypto.Prf | None = None
    keys: crypto.IkeSaKeys | None = field(default=None, repr=False)
    send_aead: crypto.Aead | None = field(default=None, repr=False)
    recv_aead: crypto.Aead | None = field(default=None, repr=False)
    iv: int = 0
    next_id: int = 0  # message ID of our next request
    peer_id: int = 0  # message ID we expect on the peer's next request
    pending: Pending | None = None
    queue: deque[Queued] = field(default_factory=deque)
    last_response: tuple[int, bytes] | None = None
    last_request: bytes = b""  # SHA-256 of the request last_response answers

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def timer(self) -> str:
        return f"rtx:{self.local_spi.hex()}"

    def set_keys(self, prf: crypto.Prf, keys: crypto.IkeSaKeys) -> None:
        self.prf, self.keys = prf, keys
        mine, theirs = (keys.sk_ei, keys.sk_er) if self.initiator else (keys.sk_er, keys.sk_ei)
        self.send_aead, self.recv_aead = crypto.Aead(mine), crypto.Aead(theirs)

    def flags(self, response: bool) -> int:
        f = HeaderFlag.INITIATOR if self.initiator else 0
        return int(f | (HeaderFlag.RESPONSE if response else 0))

    def message(self, exchange: int, message_id: int, payloads: tuple[Payload, ...], response: bool) -> Message:
        return Message(self.spi_i, self.spi_r, exchange, self.flags(response), message_id, payloads)

    def protect(self, msg: Message) -> bytes:
        assert self.send_aead is not None
        # The IV is a per-SA counter: unique under this key (RFC 5282 3.1).
        self.iv += 1
        return seal(msg, self.send_aead, self.iv.to_bytes(8, "big"))

    def open(self, data: bytes) -> Message:
        assert self.recv_aead is not None
        return unseal(data, self.recv_aead)

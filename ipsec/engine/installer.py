"""Child SAs from IKE into the userspace engine's SAD (make-before-break on rekey)."""

from __future__ import annotations

from ipsec.esp import InboundSA, OutboundSA
from ipsec.ike.events import ChildSa
from ipsec.sad import Endpoint, Inbound, Lifetime, Outbound, Sad


def _split(key: bytes) -> tuple[bytes, bytes]:
    return key[:-4], key[-4:]  # AES key | 4-octet salt (RFC 4106 8.1)


class SadInstaller:
    def __init__(self, sad: Sad, window: int = 1024, sock: int = 0, lifetime: Lifetime | None = None):
        self.sad = sad
        self.window = window
        self.sock = sock
        self.lifetime = lifetime or Lifetime()
        self.children: dict[tuple[str, int], ChildSa] = {}

    def install(self, peer: str, child: ChildSa, outbound: bool) -> None:
        key, salt = _split(child.in_key)
        inner = child.remote_ts.network_address.packed
        self.sad.add_inbound(Inbound(InboundSA(child.in_spi, key, salt, child.esn, self.window), inner,
                                     self.lifetime, self.sad.clock()))
        self.children[(peer, child.child_id)] = child
        if outbound:
            self.activate(peer, child.child_id)

    def activate(self, peer: str, child_id: int) -> None:
        child = self.children[(peer, child_id)]
        key, salt = _split(child.out_key)
        self.sad.set_outbound(child.remote_ts.network_address.packed,
                              Outbound(OutboundSA(child.out_spi, key, salt, child.esn),
                                       Endpoint(child.peer[0], child.peer[1], self.sock), self.lifetime,
                                       self.sad.clock()))

    def remove(self, peer: str, child_id: int, in_spi: int, out_spi: int) -> None:
        child = self.children.pop((peer, child_id), None)
        self.sad.remove_inbound(in_spi)
        if child is not None:
            inner = child.remote_ts.network_address.packed
            current = self.sad.outbound.get(inner)
            if current is not None and current.sa.spi == out_spi:
                self.sad.remove_outbound(inner)

    def peer_of(self, spi: int) -> tuple[str, ChildSa] | None:
        """The peering and child SA an SPI (either direction) belongs to."""
        for (peer, _cid), child in self.children.items():
            if spi in (child.in_spi, child.out_spi):
                return peer, child
        return None

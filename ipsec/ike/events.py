"""What the IKE state machine asks its driver to do. Frozen values; timers are commands too,
so tests drive time by hand (DESIGN.md convention 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network

Address = tuple[str, int]


@dataclass(frozen=True)
class Send:
    """A datagram to the peer. ``local_port`` 4500 means: prepend the non-ESP marker
    and send from the NAT-T socket (RFC 3948 2.2)."""

    data: bytes
    peer: Address
    local_port: int


@dataclass(frozen=True)
class SetTimer:
    name: str
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class ChildSa:
    """One negotiated child SA pair (tunnel mode ESP, AES-GCM)."""

    child_id: int
    in_spi: int  # the SPI the peer puts on packets to us
    out_spi: int
    in_key: bytes = field(repr=False)  # AES key | 4-octet salt
    out_key: bytes = field(repr=False)
    esn: bool
    local_ts: IPv4Network
    remote_ts: IPv4Network
    peer: Address  # where ESP-in-UDP goes (the peer's NAT-T address)


@dataclass(frozen=True)
class InstallChild:
    child: ChildSa
    outbound: bool = True  # False: inbound only for now, ActivateChild follows (make-before-break)


@dataclass(frozen=True)
class ActivateChild:
    """Switch outbound traffic to this (already installed) child SA."""

    child_id: int


@dataclass(frozen=True)
class RemoveChild:
    child_id: int
    in_spi: int
    out_spi: int


@dataclass(frozen=True)
class SendKeepalive:
    peer: Address


@dataclass(frozen=True)
class Established:
    local_spi: bytes
    remote_spi: bytes
    peer: Address
    nat_local: bool  # we are behind a NAT
    nat_remote: bool  # the peer is behind a NAT
    remote_id: str
    rekeyed: bool = False  # a rekey replaced the IKE SA's keys


@dataclass(frozen=True)
class Closed:
    reason: str
    fault: str  # "local", "remote" or "none" (an orderly delete)


Command = (
    Send | SetTimer | CancelTimer | InstallChild | ActivateChild | RemoveChild | SendKeepalive | Established | Closed
)

"""BGP capabilities (RFC 5492) used by nsg: multiprotocol (RFC 4760), route refresh (RFC 2918),
4-octet AS (RFC 6793), graceful restart (RFC 4724); unknown ones are kept as they came."""

from __future__ import annotations

from dataclasses import dataclass

from bgp.constants import (
    GR_FORWARDING_STATE,
    CapabilityCode,
)
from bgp.errors import Reader, RemoteBgpError, check_uint


# --- Capabilities, RFC 5492 section 4: | Code (1) | Length (1) | Value |
@dataclass(frozen=True)
class Capability:
    CODE = 0

    def encode_value(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes) -> Capability:
        raise NotImplementedError

    def encode(self) -> bytes:
        value = self.encode_value()
        check_uint("capability length", len(value), 8)
        return bytes((self.code, len(value))) + value

    @property
    def code(self) -> int:
        return self.CODE


CAPABILITY_CLASSES: dict[int, type[Capability]] = {}


def _register_cap(cls: type[Capability]) -> type[Capability]:
    CAPABILITY_CLASSES[cls.CODE] = cls
    return cls


@dataclass(frozen=True)
class UnknownCapability(Capability):
    """Not understood (or not in the form we would send): kept as is, RFC 5492 section 5."""

    unknown_code: int
    value: bytes

    @property
    def code(self) -> int:
        return self.unknown_code

    def encode_value(self) -> bytes:
        return self.value


# Multiprotocol, RFC 4760 section 8: | AFI (2) | Reserved (1) | SAFI (1) |
@_register_cap
@dataclass(frozen=True)
class MultiprotocolCap(Capability):
    CODE = CapabilityCode.MULTIPROTOCOL
    afi: int
    safi: int
    reserved: int = 0  # sent as 0, ignored on receipt; kept to re-encode exactly

    def encode_value(self) -> bytes:
        check_uint("afi", self.afi, 16)
        check_uint("safi", self.safi, 8)
        check_uint("reserved", self.reserved, 8)
        return self.afi.to_bytes(2, "big") + bytes((self.reserved, self.safi))

    @classmethod
    def decode_value(cls, value: bytes) -> MultiprotocolCap:
        r = Reader(value, "multiprotocol capability")
        afi, reserved, safi = r.u16(), r.u8(), r.u8()
        return cls(afi, safi, reserved)


# Route refresh, RFC 2918 section 2: no value.
@_register_cap
@dataclass(frozen=True)
class RouteRefreshCap(Capability):
    CODE = CapabilityCode.ROUTE_REFRESH

    def encode_value(self) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes) -> RouteRefreshCap:
        return cls()


# 4-octet AS, RFC 6793 section 3: | AS number (4) |
@_register_cap
@dataclass(frozen=True)
class FourOctetAsCap(Capability):
    CODE = CapabilityCode.FOUR_OCTET_AS
    asn: int

    def encode_value(self) -> bytes:
        check_uint("asn", self.asn, 32)
        return self.asn.to_bytes(4, "big")

    @classmethod
    def decode_value(cls, value: bytes) -> FourOctetAsCap:
        return cls(Reader(value, "4-octet AS capability").u32())


# Graceful restart, RFC 4724 section 3:
#   | Restart Flags (4 bits) | Restart Time in seconds (12 bits) |
#   | AFI (2) | SAFI (1) | Flags for Address Family (1) |  ... repeated
@dataclass(frozen=True)
class GrFamily:
    afi: int
    safi: int
    flags: int = GR_FORWARDING_STATE


@_register_cap
@dataclass(frozen=True)
class GracefulRestartCap(Capability):
    CODE = CapabilityCode.GRACEFUL_RESTART
    restart_time: int
    restart_flags: int = 0
    families: tuple[GrFamily, ...] = ()

    def encode_value(self) -> bytes:
        check_uint("restart_time", self.restart_time, 12)
        check_uint("restart_flags", self.restart_flags, 4)
        out = [((self.restart_flags << 12) | self.restart_time).to_bytes(2, "big")]
        for fam in self.families:
            check_uint("afi", fam.afi, 16)
            check_uint("safi", fam.safi, 8)
            check_uint("flags", fam.flags, 8)
            out.append(fam.afi.to_bytes(2, "big") + bytes((fam.safi, fam.flags)))
        return b"".join(out)

    @classmethod
    def decode_value(cls, value: bytes) -> GracefulRestartCap:
        r = Reader(value, "graceful restart capability")
        word = r.u16()
        families = []
        while r.remaining:
            families.append(GrFamily(r.u16(), r.u8(), r.u8()))
        return cls(word & 0x0FFF, word >> 12, tuple(families))


def _decode_capability(code: int, value: bytes) -> Capability:
    """A known capability in exactly the form we would send, else an UnknownCapability:
    a malformed one is not understood, and RFC 5492 says to ignore what is not understood."""
    cls = CAPABILITY_CLASSES.get(code)
    if cls is not None:
        try:
            cap = cls.decode_value(value)
        except RemoteBgpError:
            cap = None
        if cap is not None and cap.encode_value() == value:
            return cap
    return UnknownCapability(code, value)

"""A small, strict DER reader and writer (ITU-T X.690 sections 8 and 10), enough for CMS
SignedData (RFC 5652) and the few X.509 fields CMS points at.

Every element is a TLV:

    +------------+---------------------------+--------------------+
    | identifier | length                    | contents           |
    | 1 octet    | 1 octet, or 0x80|n + n    | `length` octets    |
    +------------+---------------------------+--------------------+
      bits 8-7: class (universal, application, context, private)
      bit 6:    constructed (contents are more TLVs)
      bits 5-1: tag number; 31 announces a multi-octet tag, which nothing here needs

DER (X.690 section 10.1) allows only the definite form of length, in the fewest octets: a
short form for 0..127, else 0x81..0x84 followed by a big-endian count with no leading zero
that is at least 128. The indefinite form (0x80 ... 00 00) is BER, and refused.

The reader never trusts a length: each one is checked against the bytes that are really
there before anything is sliced, and every failure is a ``CmsError`` (the bytes came from a
server) -- never an IndexError or ValueError. Encoders take our own values, so their errors
are ``LocalBootstrapError``.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from bootstrap.errors import CmsError, LocalBootstrapError, Reason

# Universal tags (X.680 section 8.4), with the constructed bit where DER requires it.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31

CONSTRUCTED = 0x20
CONTEXT = 0x80
_HIGH_TAG = 0x1F
# Four length octets cover 4 GiB, more than any bootstrap artifact; more is an attack or junk.
_MAX_LENGTH_OCTETS = 4

_TAG_NAMES = {BOOLEAN: "BOOLEAN", INTEGER: "INTEGER", BIT_STRING: "BIT STRING", OCTET_STRING: "OCTET STRING",
              NULL: "NULL", OBJECT_IDENTIFIER: "OBJECT IDENTIFIER", UTF8_STRING: "UTF8String",
              PRINTABLE_STRING: "PrintableString", UTC_TIME: "UTCTime", GENERALIZED_TIME: "GeneralizedTime",
              SEQUENCE: "SEQUENCE", SET: "SET"}


def tag_name(tag: int) -> str:
    if tag in _TAG_NAMES:
        return _TAG_NAMES[tag]
    if tag & 0xC0 == CONTEXT:
        return f"[{tag & 0x1F}]{' constructed' if tag & CONSTRUCTED else ''}"
    return f"tag 0x{tag:02x}"


def _bad(what: str, why: str) -> CmsError:
    return CmsError(f"{what}: {why}", reason=Reason.MALFORMED_DER)


@dataclass(frozen=True, slots=True)
class Tlv:
    """One element exactly as received: ``encoded`` is identifier + length + contents."""

    tag: int
    encoded: bytes
    header_len: int

    @property
    def content(self) -> bytes:
        return self.encoded[self.header_len:]

    @property
    def constructed(self) -> bool:
        return bool(self.tag & CONSTRUCTED)


# --- reading ---------------------------------------------------------------------------------


def read(data: bytes, offset: int, what: str) -> tuple[Tlv, int]:
    """The TLV starting at ``offset`` and the offset just past it."""
    end = len(data)
    if offset >= end:
        raise _bad(what, "missing (no bytes left)")
    tag = data[offset]
    if tag & _HIGH_TAG == _HIGH_TAG:
        raise _bad(what, f"multi-octet tag 0x{tag:02x}.. is not used by CMS")
    if tag == 0:
        raise _bad(what, "end-of-contents octets (BER indefinite length) are not DER")
    if offset + 1 >= end:
        raise _bad(what, "truncated before the length")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise _bad(what, "indefinite length is BER, not DER (X.690 10.1)")
    else:
        count = first & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise _bad(what, f"length in {count} octets is over-long")
        if pos + count > end:
            raise _bad(what, "truncated inside the length")
        length_octets = data[pos:pos + count]
        if length_octets[0] == 0:
            raise _bad(what, "length has a leading zero octet (not minimal, X.690 10.1)")
        length = int.from_bytes(length_octets, "big")
        if length < 0x80:
            raise _bad(what, f"length {length} in long form (must be short form in DER)")
        pos += count
    if pos + length > end:
        raise _bad(what, f"{tag_name(tag)} claims {length} octets, only {end - pos} remain")
    return Tlv(tag, bytes(data[offset:pos + length]), pos - offset), pos + length


def parse(data: bytes, what: str) -> Tlv:
    """Exactly one TLV, with nothing after it."""
    tlv, end = read(data, 0, what)
    if end != len(data):
        raise _bad(what, f"{len(data) - end} trailing octets after the {tag_name(tlv.tag)}")
    return tlv


def children(tlv: Tlv, what: str) -> list[Tlv]:
    """The elements inside a constructed TLV; they must fill it exactly."""
    if not tlv.constructed:
        raise _bad(what, f"{tag_name(tlv.tag)} is primitive, expected constructed")
    content, out, pos = tlv.content, [], 0
    while pos < len(content):
        child, pos = read(content, pos, f"{what} element {len(out) + 1}")
        out.append(child)
    return out


def expect(tlv: Tlv, tag: int, what: str) -> Tlv:
    if tlv.tag != tag:
        raise _bad(what, f"expected {tag_name(tag)}, got {tag_name(tlv.tag)}")
    return tlv


class Fields:
    """Walks the components of a SEQUENCE in order: ``take`` a mandatory one, ``maybe`` an
    OPTIONAL one identified by its tag, then ``end`` checks nothing is left over."""

    def __init__(self, tlv: Tlv, what: str, tag: int = SEQUENCE) -> None:
        self._items = children(expect(tlv, tag, what), what)
        self._next = 0
        self._what = what

    def take(self, tag: int, name: str) -> Tlv:
        if self._next >= len(self._items):
            raise _bad(f"{self._what}.{name}", "missing")
        item = expect(self._items[self._next], tag, f"{self._what}.{name}")
        self._next += 1
        return item

    def maybe(self, tag: int) -> Tlv | None:
        if self._next < len(self._items) and self._items[self._next].tag == tag:
            self._next += 1
            return self._items[self._next - 1]
        return None

    def end(self) -> None:
        left = len(self._items) - self._next
        if left:
            raise _bad(self._what, f"{left} unexpected trailing component(s), first "
                                   f"{tag_name(self._items[self._next].tag)}")


def as_int(tlv: Tlv, what: str) -> int:
    content = expect(tlv, INTEGER, what).content
    if not content:
        raise _bad(what, "empty INTEGER")
    # X.690 8.3.2: the first nine bits must not be all zeros or all ones.
    if len(content) > 1 and ((content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)):
        raise _bad(what, "INTEGER is not minimally encoded")
    return int.from_bytes(content, "big", signed=True)


def as_octets(tlv: Tlv, what: str) -> bytes:
    # DER forbids the constructed form of OCTET STRING (X.690 10.2), so tag 0x24 fails here.
    return expect(tlv, OCTET_STRING, what).content


def as_null(tlv: Tlv, what: str) -> None:
    if expect(tlv, NULL, what).content:
        raise _bad(what, "NULL with contents")


def as_oid(tlv: Tlv, what: str) -> str:
    """X.690 8.19: base-128 subidentifiers, high bit = more follows; the first one is 40*X + Y."""
    content = expect(tlv, OBJECT_IDENTIFIER, what).content
    if not content:
        raise _bad(what, "empty OBJECT IDENTIFIER")
    if content[-1] & 0x80:
        raise _bad(what, "OBJECT IDENTIFIER ends inside a subidentifier")
    subids, value, fresh = [], 0, True
    for octet in content:
        if fresh and octet == 0x80:
            raise _bad(what, "subidentifier with a leading 0x80 (not minimal, X.690 8.19.2)")
        value = (value << 7) | (octet & 0x7F)
        fresh = not octet & 0x80
        if fresh:
            subids.append(value)
            value = 0
    first = subids[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(s) for s in head + subids[1:])


_UTC_TIME = re.compile(rb"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z")
_GENERALIZED_TIME = re.compile(rb"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d*[1-9]))?Z")


def as_time(tlv: Tlv, what: str) -> datetime.datetime:
    """UTCTime or GeneralizedTime in their DER forms (X.690 11.7, 11.8): seconds present, 'Z',
    no trailing zeros in a fraction. UTCTime years 50-99 are 19xx (RFC 5280 4.1.2.5.1)."""
    if tlv.tag == UTC_TIME:
        m = _UTC_TIME.fullmatch(tlv.content)
        if m is None:
            raise _bad(what, "UTCTime is not YYMMDDHHMMSSZ")
        yy = int(m[1])
        fields, micro = [1900 + yy if yy >= 50 else 2000 + yy, *(int(g) for g in m.groups()[1:])], 0
    elif tlv.tag == GENERALIZED_TIME:
        m = _GENERALIZED_TIME.fullmatch(tlv.content)
        if m is None:
            raise _bad(what, "GeneralizedTime is not YYYYMMDDHHMMSS[.f]Z")
        fields = [int(g) for g in m.groups()[:6]]
        micro = int((m[7] or b"0").ljust(6, b"0")[:6])  # beyond microseconds is dropped
    else:
        raise _bad(what, f"expected UTCTime or GeneralizedTime, got {tag_name(tlv.tag)}")
    try:
        return datetime.datetime(*fields, micro, tzinfo=datetime.UTC)
    except ValueError:
        raise _bad(what, "time value out of range") from None


# --- writing ---------------------------------------------------------------------------------


def encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(octets) > _MAX_LENGTH_OCTETS:
        raise LocalBootstrapError(f"{n} octets is too long to encode")
    return bytes((tag, 0x80 | len(octets))) + octets + content


def sequence(*parts: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    """DER SET OF: the encodings sorted as octet strings (X.690 11.6)."""
    return encode(SET, b"".join(sorted(parts)))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    """A context-specific tag [number]: EXPLICIT wraps a whole TLV as ``content``; IMPLICIT
    passes the contents of the element it replaces."""
    if not 0 <= number < _HIGH_TAG:
        raise LocalBootstrapError(f"context tag [{number}] needs the multi-octet form")
    return encode(CONTEXT | (CONSTRUCTED if constructed else 0) | number, content)


def integer(value: int) -> bytes:
    length = (value + (value < 0)).bit_length() // 8 + 1  # room for the sign bit
    return encode(INTEGER, value.to_bytes(length, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return encode(OCTET_STRING, value)


def null() -> bytes:
    return encode(NULL, b"")


def oid(dotted: str) -> bytes:
    try:
        arcs = [int(a) for a in dotted.split(".")]
    except ValueError:
        raise LocalBootstrapError(f"{dotted!r} is not a dotted OID") from None
    if len(arcs) < 2 or any(a < 0 for a in arcs) or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise LocalBootstrapError(f"{dotted!r} is not a valid OID (X.660)")
    out = bytearray()
    for subid in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        groups = max(1, (subid.bit_length() + 6) // 7)  # base 128, high bit set on all but the last
        out += bytes(((subid >> (7 * i)) & 0x7F) | (0x80 if i else 0) for i in range(groups - 1, -1, -1))
    return encode(OBJECT_IDENTIFIER, bytes(out))


def time(value: datetime.datetime) -> bytes:
    """UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5652 11.3, RFC 5280 4.1.2.5)."""
    if value.tzinfo is None:
        raise LocalBootstrapError("times must be timezone-aware")
    value = value.astimezone(datetime.UTC).replace(microsecond=0)
    if 1950 <= value.year < 2050:
        return encode(UTC_TIME, value.strftime("%y%m%d%H%M%SZ").encode())
    return encode(GENERALIZED_TIME, f"{value.year:04d}{value.strftime('%m%d%H%M%S')}Z".encode())

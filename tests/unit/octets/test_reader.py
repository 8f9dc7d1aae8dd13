"""The shared bounds-checked reader, and how each protocol turns its length errors into its own
(a BGP NOTIFICATION code/subcode, an IKE INVALID_SYNTAX notify), both naming the peer's fault."""

from __future__ import annotations

import pytest

from bgp.constants import ErrorCode, OpenSubcode, UpdateSubcode
from bgp.errors import Reader as BgpReader
from bgp.errors import RemoteBgpError
from ipsec.ike.constants import NotifyType
from ipsec.ike.errors import RemoteProtocolError
from ipsec.ike.reader import Reader as IkeReader
from octets import LengthError, Reader

DATA = bytes(range(1, 12))  # 01 02 .. 0b


def test_reads_big_endian_fields_in_order():
    r = Reader(DATA, "thing")
    assert (r.u8(), r.u16(), r.u24(), r.u32()) == (0x01, 0x0203, 0x040506, 0x0708090A)
    assert r.remaining == 1 and r.rest() == b"\x0b" and r.remaining == 0
    r.end()


def test_accepts_any_bytes_like_and_returns_bytes():
    r = Reader(memoryview(bytearray(b"\x01\x02\x03")), "thing")
    assert r.take(2) == b"\x01\x02" and type(r.take(1)) is bytes


@pytest.mark.parametrize("size", range(len(DATA)))
def test_every_truncation_is_a_length_error_never_an_index_error(size):
    r = Reader(DATA[:size], "thing")
    with pytest.raises(LengthError, match=r"^thing: truncated \(need \d+ octets, have \d+\)$"):
        for read in (r.u8, r.u16, r.u24, r.u32, r.u8):
            read()


def test_a_failed_read_consumes_nothing():
    r = Reader(b"\x01\x02\x03", "thing")
    with pytest.raises(LengthError, match="need 4 octets, have 3"):
        r.u32()
    assert r.remaining == 3 and r.u24() == 0x010203


def test_trailing_octets_are_a_length_error():
    r = Reader(b"\x01\x02", "thing")
    r.u8()
    with pytest.raises(LengthError, match=r"^thing: 1 trailing octets$"):
        r.end()


def test_bgp_maps_length_errors_to_the_notification_chosen_for_the_structure():
    r = BgpReader(b"\x01", "OPEN", ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSPECIFIC)
    with pytest.raises(RemoteBgpError) as short:
        r.u16()
    assert (short.value.code, short.value.subcode, short.value.fault) == (2, 0, "remote")
    assert str(short.value) == "OPEN: truncated (need 2 octets, have 1)"
    with pytest.raises(RemoteBgpError) as trailing:
        BgpReader(b"\x01", "attribute").end()  # the default: UPDATE Message Error / Optional Attribute Error
    assert (trailing.value.code, trailing.value.subcode) == (ErrorCode.UPDATE_MESSAGE,
                                                             UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR) == (3, 9)
    assert r.error("bad value", data=b"\xff").data == b"\xff"  # callers raise it for their own checks


def test_ike_maps_length_errors_to_invalid_syntax():
    with pytest.raises(RemoteProtocolError) as short:
        IkeReader(b"\x01", "Notify payload").u16()
    assert (short.value.notify, short.value.fault) == (NotifyType.INVALID_SYNTAX, "remote")
    assert str(short.value) == "Notify payload: truncated (need 2 octets, have 1)"
    with pytest.raises(RemoteProtocolError, match="TS payload: 2 trailing octets") as trailing:
        IkeReader(b"\x01\x02", "TS payload").end()
    assert trailing.value.notify == NotifyType.INVALID_SYNTAX == 7  # RFC 7296 section 3.10.1

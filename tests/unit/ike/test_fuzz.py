"""Hypothesis: whatever arrives, decoding raises only IKE errors, and only the
remote kind (a LocalProtocolError here would mean a decoder passed a peer's
value into a constructor unchecked). Anything that decodes re-encodes to
something that decodes the same."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec.ike.constants import IKE_HEADER_LEN, PayloadType
from ipsec.ike.crypto import Aead
from ipsec.ike.errors import IntegrityError, RemoteProtocolError
from ipsec.ike.message import Message, decode_payloads, seal, unseal
from ipsec.ike.payloads import PAYLOAD_CLASSES
from tests.mutate import mutate
from tests.unit.ike.test_payloads import SPI_I, SPI_R, every_payload, ike_auth_request, ike_sa_init_request

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AEAD = Aead(bytes(range(36)))

VALID_PLAIN = [
    ike_sa_init_request(bytes(range(64)), bytes(range(32)), bytes(20), bytes(20)).encode(),
    Message(SPI_I, SPI_R, 37, 0x20, 9, tuple(every_payload())).encode(),
]
VALID_SEALED = [seal(ike_auth_request(), AEAD, bytes(8)), seal(ike_auth_request(), AEAD, bytes(8), pad_len=7)]
PAYLOAD_TYPES = st.sampled_from([*PAYLOAD_CLASSES, PayloadType.SK, 0, 47, 200])


def decode_or_fail(data: bytes) -> Message | None:
    try:
        msg = Message.decode(data)
    except RemoteProtocolError:
        return None
    # A decoded message is stable under re-encoding.
    assert Message.decode(msg.encode()) == msg
    return msg


@st.composite
def mutated(draw, valid: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(valid)))
    mutate(draw, data)
    if draw(st.booleans()) and len(data) >= IKE_HEADER_LEN:
        data[24:28] = len(data).to_bytes(4, "big")  # keep the length honest to get past the header
    return bytes(data)


@st.composite
def header_and_chain(draw) -> bytes:
    """A valid header in front of random payload octets, so the fuzzing reaches the payload decoders."""
    chain = draw(st.binary(max_size=300))
    head = bytearray(VALID_PLAIN[0][:IKE_HEADER_LEN])
    head[16] = draw(PAYLOAD_TYPES)
    head[24:28] = (IKE_HEADER_LEN + len(chain)).to_bytes(4, "big")
    return bytes(head) + chain


@FUZZ
@given(st.binary(max_size=400))
def test_decode_arbitrary_bytes(data):
    decode_or_fail(data)


@FUZZ
@given(header_and_chain())
def test_decode_valid_header_with_arbitrary_payloads(data):
    decode_or_fail(data)


@FUZZ
@given(mutated(VALID_PLAIN))
def test_decode_mutations_of_valid_messages(data):
    decode_or_fail(data)


@FUZZ
@given(mutated(VALID_SEALED))
def test_unseal_mutations_of_sealed_messages(data):
    with contextlib.suppress(RemoteProtocolError):
        unseal(data, AEAD)
    decode_or_fail(data)


@FUZZ
@given(PAYLOAD_TYPES, st.binary(max_size=200))
def test_payload_chains_and_bodies(first, data):
    with contextlib.suppress(RemoteProtocolError):
        decode_payloads(first, data)
    for cls in PAYLOAD_CLASSES.values():
        try:
            payload = cls.decode(data)
        except RemoteProtocolError:
            continue
        assert cls.decode(payload.encode()) == payload


@pytest.mark.parametrize("valid", VALID_SEALED)
def test_unmodified_sealed_samples_open(valid):
    assert unseal(valid, AEAD) == ike_auth_request()
    with pytest.raises(IntegrityError):
        unseal(valid[:-1] + bytes((valid[-1] ^ 0x80,)), AEAD)

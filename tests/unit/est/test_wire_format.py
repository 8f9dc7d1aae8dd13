"""Issue 22 section 2: EST bodies on the wire. We send base64 without line breaks (RFC 4648 section 4;
strongSwan's pki reads nothing else, tests/interop/test_est_pki.py) and read every layout a peer may
send: one line, 76- or 64-column lines, LF or CRLF, a trailing newline (RFC 8951 section 3)."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from bootstrap import est
from controller.est_server import certs_only_body, decode_csr_body
from tests.unit.est.test_est import SERIAL, est_server, run

WHITESPACE = (b"\n", b"\r", b" ", b"\t")


def layouts(der: bytes) -> dict[str, bytes]:
    flat = base64.b64encode(der)
    lines = {n: [flat[i:i + n] for i in range(0, len(flat), n)] for n in (64, 76)}
    return {"one line": flat, "one line + LF": flat + b"\n", "76 columns LF": b"\n".join(lines[76]) + b"\n",
            "64 columns CRLF": b"\r\n".join(lines[64]) + b"\r\n", "76 columns, no final LF": b"\n".join(lines[76])}


def test_replies_are_base64_without_line_breaks(pki):
    body = certs_only_body([pki.ca.cert, pki.manufacturer[1]])  # long enough for several 76-column lines
    assert len(body) > 2 * 76
    assert not any(ws in body for ws in WHITESPACE), body[:100]
    # a SET OF in DER: the order is the encoding's, not ours
    assert set(pkcs7.load_der_pkcs7_certificates(base64.b64decode(body, validate=True))) == {pki.ca.cert,
                                                                                            pki.manufacturer[1]}


def test_requests_are_base64_without_line_breaks():
    body = est.encode_csr(est.build_csr(est.new_key(), est.device_subject(SERIAL)))
    assert len(body) > 76 and not any(ws in body for ws in WHITESPACE), body[:100]


def test_the_server_sends_one_line_over_http(pki):
    """What goes over the wire for /cacerts and /simpleenroll, not just what the helper returns."""
    ctx = pki.client_context(pki.idevid(SERIAL), "idevid")
    csr = est.encode_csr(est.build_csr(est.new_key(), est.device_subject(SERIAL)))

    async def scenario():
        async with est_server(pki) as (url, _), aiohttp.ClientSession() as session:
            async with session.get(f"{url}/.well-known/est/cacerts", ssl=pki.client_context()) as resp:
                cacerts = resp.status, await resp.read()
            async with session.post(f"{url}/.well-known/est/simpleenroll", data=csr, ssl=ctx,
                                    headers={"Content-Type": est.CT_PKCS10}) as resp:
                enrolled = resp.status, await resp.read()
        return cacerts, enrolled

    for status, body in run(scenario()):
        assert status == 200, body
        assert not any(ws in body for ws in WHITESPACE), body[:100]


@pytest.mark.parametrize("layout", ["one line", "one line + LF", "76 columns LF", "64 columns CRLF",
                                    "76 columns, no final LF"])
def test_every_layout_is_read_by_server_and_client(pki, layout):
    csr = est.build_csr(est.new_key(), est.device_subject(SERIAL))
    body = layouts(csr.public_bytes(serialization.Encoding.DER))[layout]
    assert decode_csr_body(est.CT_PKCS10, body) == csr
    certs = [pki.ca.cert, pki.manufacturer[1]]
    reply = layouts(pkcs7.serialize_certificates(certs, serialization.Encoding.DER))[layout]
    assert set(est.decode_certs_only(reply)) == set(certs)

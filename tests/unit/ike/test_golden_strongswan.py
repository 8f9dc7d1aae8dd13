"""strongSwan 5.9.8's IKE_SA_INIT and IKE_AUTH (tests/golden/strongswan), read by OUR codec and crypto:
the messages decode, our key derivation reproduces the secrets charon logged, our SK payload code
opens IKE_AUTH, and both PSK AUTH payloads verify with our signed-octets and PRF code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipsec.ike import crypto
from ipsec.ike.constants import DhGroup, EncrId, NotifyType, PrfId, TransformType
from ipsec.ike.message import Message, unseal
from ipsec.ike.payloads import KE, SA, Auth, IDi, IDr, Nonce, TSi, TSr
from ipsec.ike.policy import EspProposal, IkeProposal, accept_esp, choose_esp, choose_ike

G = Path(__file__).parents[2] / "golden" / "strongswan"
INIT = json.loads((G / "ike_sa_init.json").read_text())
AUTH = json.loads((G / "ike_auth_psk.json").read_text())
KEYS = AUTH["keys"]


def test_ike_sa_init_decodes_and_we_would_choose_its_proposal():
    req = Message.decode(bytes.fromhex(INIT["request"]))
    resp = Message.decode(bytes.fromhex(INIT["response"]))
    assert req.spi_i.hex() == INIT["initiator_spi"] and resp.spi_r.hex() == INIT["responder_spi"]
    offer = req.get(SA)
    _reply, chosen = choose_ike(offer, (IkeProposal(128, PrfId.HMAC_SHA2_256, DhGroup.ECP_256),))
    assert chosen.dh == 19
    p = resp.get(SA).proposals[0]
    assert p.of_type(TransformType.ENCR)[0].transform_id == EncrId.AES_GCM_16
    assert p.of_type(TransformType.ENCR)[0].key_length == 128
    assert req.get(KE).group == resp.get(KE).group == 19
    for m in (req, resp):
        assert m.notify(NotifyType.NAT_DETECTION_SOURCE_IP) and m.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)


def _derived():
    req = Message.decode(bytes.fromhex(INIT["request"]))
    resp = Message.decode(bytes.fromhex(INIT["response"]))
    ni, nr = req.get(Nonce).data, resp.get(Nonce).data
    prf = crypto.prf_for(PrfId.HMAC_SHA2_256)
    seed = crypto.skeyseed(prf, ni, nr, bytes.fromhex(KEYS["dh_shared_secret"]["hex"]))
    keys = crypto.ike_sa_keys(prf, seed, ni, nr, req.spi_i, resp.spi_r, crypto.aes_gcm_keymat_len(128))
    return prf, seed, keys, ni, nr


def test_our_key_derivation_matches_charon():
    _prf, seed, keys, _ni, _nr = _derived()
    assert seed.hex() == KEYS["skeyseed"]["hex"]
    assert keys.sk_d.hex() == KEYS["sk_d"]["hex"]
    assert keys.sk_ei.hex() == KEYS["sk_ei"]["key"] + KEYS["sk_ei"]["salt"]
    assert keys.sk_er.hex() == KEYS["sk_er"]["key"] + KEYS["sk_er"]["salt"]
    assert keys.sk_pi.hex() == KEYS["sk_pi"]["hex"] and keys.sk_pr.hex() == KEYS["sk_pr"]["hex"]


@pytest.mark.parametrize("side", ["request", "response"])
def test_ike_auth_opens_and_psk_auth_verifies(side):
    prf, _seed, keys, ni, nr = _derived()
    aead = crypto.Aead(keys.sk_ei if side == "request" else keys.sk_er)
    msg = unseal(bytes.fromhex(AUTH[side]), aead)
    psk = bytes.fromhex(AUTH["psk"])
    if side == "request":
        ident, real, nonce, sk_p = msg.get(IDi), INIT["request"], nr, keys.sk_pi
    else:
        ident, real, nonce, sk_p = msg.get(IDr), INIT["response"], ni, keys.sk_pr
    octets = crypto.signed_octets(bytes.fromhex(real), nonce, prf, sk_p, ident.encode())
    crypto.verify_psk_auth(prf, psk, octets, msg.get(Auth).data)
    assert msg.get(TSi) is not None and msg.get(TSr) is not None
    ours = (EspProposal(128, False, 0),)
    if side == "request":
        choose_esp(msg.get(SA), ours, with_dh=False)  # we would accept charon's child proposal
    else:
        accept_esp(msg.get(SA), ours, with_dh=False)

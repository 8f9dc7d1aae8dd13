"""IPsec settings of a gateway (transport "esp"): credentials, proposals, lifetimes.

Proposal strings follow the familiar strongSwan spelling, so an operator can copy
them between both: IKE "aes128gcm16-prfsha256-ecp256", ESP "aes256gcm16-esn-x25519"
(the last part of an ESP proposal is the PFS group used when the child SA is rekeyed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ipsec.ike.constants import DhGroup, PrfId
from nsg.model.base import Frozen

_ENCR = r"aes(?P<bits>128|256)gcm16"
# strongSwan's keywords for the transforms we speak; the numbers are the IKE library's (IANA, RFC 7296 3.3.2)
_GROUPS = {"ecp256": DhGroup.ECP_256, "ecp384": DhGroup.ECP_384, "x25519": DhGroup.CURVE25519,
           "curve25519": DhGroup.CURVE25519}
_PRFS = {"prfsha256": PrfId.HMAC_SHA2_256, "prfsha384": PrfId.HMAC_SHA2_384}
_DH_RE, _PRF_RE = "|".join(_GROUPS), "|".join(_PRFS)
IKE_RE = re.compile(_ENCR + rf"-(?P<prf>{_PRF_RE})-(?P<dh>{_DH_RE})$")
ESP_RE = re.compile(_ENCR + rf"(?P<esn>-esn|-noesn)?(?:-(?P<dh>{_DH_RE}))?$")


def parse_ike(text: str) -> tuple[int, int, int]:
    """(AES key bits, PRF transform ID, DH group)."""
    m = IKE_RE.match(text)
    if not m:
        raise ValueError(f"IKE proposal {text!r} is not aes{{128,256}}gcm16-prfsha{{256,384}}-{{ecp256,ecp384,x25519}}")
    return int(m["bits"]), int(_PRFS[m["prf"]]), int(_GROUPS[m["dh"]])


def parse_esp(text: str) -> tuple[int, bool, int]:
    """(AES key bits, ESN, PFS DH group or 0)."""
    m = ESP_RE.match(text)
    if not m:
        raise ValueError(f"ESP proposal {text!r} is not aes{{128,256}}gcm16[-esn|-noesn][-ecp256|-ecp384|-x25519]")
    return int(m["bits"]), m["esn"] == "-esn", int(_GROUPS[m["dh"]]) if m["dh"] else 0


MAX_CRL_BYTES = 4 << 20  # a CRL in the config: revoked serials of unexpired LDevIDs (some 40 bytes each)


class IpsecTuning(Frozen):
    """Proposals, lifetimes and timers: what a gateway's IKE and child SAs look like."""

    ike_proposals: tuple[str, ...] = ("aes128gcm16-prfsha256-ecp256",)
    esp_proposals: tuple[str, ...] = ("aes128gcm16-esn-ecp256", "aes128gcm16-ecp256")
    ike_rekey_s: int = Field(default=14400, ge=60, le=7 * 86400)
    child_rekey_s: int = Field(default=3600, ge=30, le=86400)
    dpd_s: int = Field(default=30, ge=2, le=3600)
    # After a child rekey the old inbound SA stays this long for packets already under way.
    rekey_overlap_s: float = Field(default=5.0, ge=0.5, le=60)
    # Volume limits of a child SA (0: none): past the soft one it is rekeyed, past the hard
    # one it is dropped (RFC 4301 4.4.2.1). The hard time limit is 1.25 x child_rekey_s.
    child_soft_bytes: int = Field(default=0, ge=0)
    child_hard_bytes: int = Field(default=0, ge=0)
    child_soft_packets: int = Field(default=0, ge=0)
    child_hard_packets: int = Field(default=0, ge=0)
    replay_window: int = Field(default=1024, ge=32, le=65536)

    @field_validator("ike_proposals")
    @classmethod
    def _ike(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one IKE proposal")
        for p in v:
            parse_ike(p)
        return v

    @field_validator("esp_proposals")
    @classmethod
    def _esp(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one ESP proposal")
        for p in v:
            parse_esp(p)
        return v

    @model_validator(mode="after")
    def _limits(self) -> IpsecTuning:
        for kind in ("bytes", "packets"):
            soft, hard = getattr(self, f"child_soft_{kind}"), getattr(self, f"child_hard_{kind}")
            if soft and hard and soft >= hard:
                raise ValueError(f"child_soft_{kind} must be below child_hard_{kind}")
        return self


class IpsecConfig(IpsecTuning):
    """How this gateway authenticates its peers (RFC 7296 section 2.15) and what its SAs look like.

    ``auth``:
      - "ldevid" (the default): the box's own LDevID from EST (``<state>/identity``) signs (RFC 7427);
        a peer must present a certificate from the same CA (the controller's, in the identity store)
        whose subjectAltName holds the peer's system IP and whose subject serialNumber is the peer's
        ``serial`` in this config, and that the ``crl`` does not list.
      - "certificate": the same, with the certificate, key and CA files named here (a box set up by hand).
      - "psk": a pre-shared key per peer (``peers[].psk``); there is no key shared by every peer.
    """

    auth: Literal["ldevid", "certificate", "psk"] = "ldevid"
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    # The CA's revocation list (PEM), pushed with the config: a listed certificate is refused in IKE_AUTH.
    crl: str | None = Field(default=None, max_length=MAX_CRL_BYTES, repr=False)

    @model_validator(mode="after")
    def _auth(self) -> IpsecConfig:
        certs = (self.cert, self.key, self.ca)
        if self.auth == "certificate" and not all(certs):
            raise ValueError("auth 'certificate' needs all of 'cert', 'key' and 'ca'")
        if self.auth != "certificate" and any(certs):
            raise ValueError(f"auth {self.auth!r} takes no 'cert', 'key' or 'ca' files (auth 'certificate' does)")
        if self.auth == "psk" and self.crl is not None:
            raise ValueError("auth 'psk' has no certificates to revoke: no 'crl'")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_fleet_psk(cls, data: object) -> object:
        if isinstance(data, dict) and "psk" in data:
            raise ValueError("'psk' for every peer is a secret shared by the whole fleet: use auth 'ldevid' "
                             "(certificates), or auth 'psk' with a key per peer (peers[].psk)")
        return data

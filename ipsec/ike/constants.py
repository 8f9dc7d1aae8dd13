"""IKEv2 protocol numbers from RFC 7296 and the IANA "IKEv2 Parameters" registry.

Only wire values live here. Timeouts, retry counts, window sizes and other
tuning knobs belong to the state machine, not to this file.

The enums are IntEnums so that a decoded value compares equal to the constant,
while codecs still carry plain ints: a peer may send a value we have never
heard of, and the codec must keep it rather than fail.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# RFC 7296 section 3.1: the fixed IKE header is 28 octets.
IKE_HEADER_LEN = 28
IKE_SPI_LEN = 8
# RFC 7296 section 3.1: this document is version 2.0.
IKE_MAJOR_VERSION = 2
IKE_MINOR_VERSION = 0
# RFC 7296 section 3.2: every payload starts with a 4-octet generic header.
GENERIC_PAYLOAD_HEADER_LEN = 4
# RFC 7296 section 3.2: the critical bit is the top bit of the second octet.
CRITICAL_BIT = 0x80
# RFC 7296 section 3.9: nonces are 16..256 octets.
NONCE_MIN_LEN = 16
NONCE_MAX_LEN = 256
# RFC 7296 section 3.10.1: types below this are errors, at or above it status.
NOTIFY_STATUS_MIN = 16384
# RFC 5282 section 7 / RFC 4106 section 8.1: the 4 salt octets that follow each
# AES-GCM key in the keying material.
AES_GCM_SALT_LEN = 4


class ExchangeType(IntEnum):
    """RFC 7296 section 3.1, Exchange Type."""

    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37


class HeaderFlag(IntFlag):
    """RFC 7296 section 3.1, Flags (all other bits are sent as 0 and ignored)."""

    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(IntEnum):
    """RFC 7296 section 3.2, Next Payload values."""

    NONE = 0
    SA = 33
    KE = 34
    IDI = 35
    IDR = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR = 43
    TSI = 44
    TSR = 45
    SK = 46
    CP = 47
    EAP = 48
    # RFC 7383 section 2.5.
    SKF = 53


class TransformType(IntEnum):
    """RFC 7296 section 3.3.2, Transform Type."""

    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4
    ESN = 5


class EncrId(IntEnum):
    """Transform type 1 IDs. RFC 5282 section 8 (IKE) and RFC 4106 (ESP)."""

    AES_GCM_16 = 20


class PrfId(IntEnum):
    """Transform type 2 IDs, RFC 4868 section 4."""

    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6


class IntegId(IntEnum):
    """Transform type 3 IDs. AEAD ciphers pair with NONE (RFC 5282 section 8)."""

    NONE = 0


class DhGroup(IntEnum):
    """Transform type 4 IDs: RFC 5903 section 5 (ECP) and RFC 8031 section 4 (X25519)."""

    NONE = 0
    ECP_256 = 19
    ECP_384 = 20
    CURVE25519 = 31


class EsnId(IntEnum):
    """Transform type 5 IDs, RFC 7296 section 3.3.2."""

    NO_ESN = 0
    ESN = 1


class TransformAttr(IntEnum):
    """RFC 7296 section 3.3.5, Attribute Type."""

    KEY_LENGTH = 14


class ProtocolId(IntEnum):
    """RFC 7296 section 3.3.1, Protocol ID (also used by Notify and Delete)."""

    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3


class NotifyType(IntEnum):
    """RFC 7296 section 3.10.1 and later RFCs, Notify Message Type."""

    # Errors.
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    # Status.
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396  # RFC 4555
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427


class IdType(IntEnum):
    """RFC 7296 section 3.5, ID Type."""

    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    KEY_ID = 11


class AuthMethod(IntEnum):
    """RFC 7296 section 3.8, Auth Method; 9/10 from RFC 4754, 14 from RFC 7427."""

    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    DIGITAL_SIGNATURE = 14


class CertEncoding(IntEnum):
    """RFC 7296 section 3.6, Cert Encoding."""

    X509_SIGNATURE = 4


class TsType(IntEnum):
    """RFC 7296 section 3.13.1, TS Type."""

    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8


class HashAlgorithm(IntEnum):
    """RFC 7427 section 7: hash IDs in a SIGNATURE_HASH_ALGORITHMS notify."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4


def is_error_notify(notify_type: int) -> bool:
    """True for error types (RFC 7296 section 3.10.1: 0..16383)."""
    return notify_type < NOTIFY_STATUS_MIN

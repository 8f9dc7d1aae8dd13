"""BGP and EVPN code points from the RFCs, then (apart, at the end) tuning values.

Protocol numbers are IntEnums so that logs print names; unknown values are still
carried as plain ints by the codec.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag, StrEnum

# --- RFC 4271 section 4.1: message header -----------------------------------------------
MARKER = b"\xff" * 16
HEADER_LEN = 19  # marker 16 + length 2 + type 1
MAX_MESSAGE_LEN = 4096  # RFC 4271; RFC 8654 extended messages are not negotiated
BGP_VERSION = 4
AS_TRANS = 23456  # RFC 6793 section 9: the 2-octet stand-in for a 4-octet AS
MIN_HOLD_TIME = 3  # RFC 4271 section 4.2: hold time is 0 or at least 3 seconds


class MessageType(IntEnum):
    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5  # RFC 2918


# Smallest legal total length per type (RFC 4271 sections 4.2-4.5, RFC 2918 section 3).
MIN_LENGTH = {
    MessageType.OPEN: 29,
    MessageType.UPDATE: 23,
    MessageType.NOTIFICATION: 21,
    MessageType.KEEPALIVE: 19,
    MessageType.ROUTE_REFRESH: 23,
}


# --- RFC 4271 section 4.5: NOTIFICATION error codes and subcodes ------------------------
class ErrorCode(IntEnum):
    MESSAGE_HEADER = 1
    OPEN_MESSAGE = 2
    UPDATE_MESSAGE = 3
    HOLD_TIMER_EXPIRED = 4
    FSM = 5
    CEASE = 6
    ROUTE_REFRESH = 7  # RFC 7313 section 5


class HeaderSubcode(IntEnum):
    CONNECTION_NOT_SYNCHRONIZED = 1
    BAD_MESSAGE_LENGTH = 2
    BAD_MESSAGE_TYPE = 3


class OpenSubcode(IntEnum):
    UNSPECIFIC = 0
    UNSUPPORTED_VERSION_NUMBER = 1
    BAD_PEER_AS = 2
    BAD_BGP_IDENTIFIER = 3
    UNSUPPORTED_OPTIONAL_PARAMETER = 4
    # 5 (Authentication Failure) is deprecated by RFC 4271.
    UNACCEPTABLE_HOLD_TIME = 6
    UNSUPPORTED_CAPABILITY = 7  # RFC 5492 section 5


class UpdateSubcode(IntEnum):
    MALFORMED_ATTRIBUTE_LIST = 1
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
    MISSING_WELL_KNOWN_ATTRIBUTE = 3
    ATTRIBUTE_FLAGS_ERROR = 4
    ATTRIBUTE_LENGTH_ERROR = 5
    INVALID_ORIGIN_ATTRIBUTE = 6
    # 7 (AS Routing Loop) is deprecated by RFC 4271.
    INVALID_NEXT_HOP_ATTRIBUTE = 8
    OPTIONAL_ATTRIBUTE_ERROR = 9
    INVALID_NETWORK_FIELD = 10
    MALFORMED_AS_PATH = 11


class CeaseSubcode(IntEnum):  # RFC 4486 section 4
    MAX_PREFIXES = 1
    ADMINISTRATIVE_SHUTDOWN = 2
    PEER_DECONFIGURED = 3
    ADMINISTRATIVE_RESET = 4
    CONNECTION_REJECTED = 5
    OTHER_CONFIGURATION_CHANGE = 6
    CONNECTION_COLLISION_RESOLUTION = 7
    OUT_OF_RESOURCES = 8


class RouteRefreshSubcode(IntEnum):  # RFC 7313 section 5
    INVALID_MESSAGE_LENGTH = 1


# --- OPEN optional parameters and capabilities -------------------------------------------
class OptParamType(IntEnum):
    CAPABILITIES = 2  # RFC 5492 section 4


class CapabilityCode(IntEnum):
    MULTIPROTOCOL = 1  # RFC 4760 section 8
    ROUTE_REFRESH = 2  # RFC 2918 section 2
    GRACEFUL_RESTART = 64  # RFC 4724 section 3
    FOUR_OCTET_AS = 65  # RFC 6793 section 3


class Afi(IntEnum):
    IPV4 = 1
    IPV6 = 2
    L2VPN = 25  # RFC 4761/7432


class Safi(IntEnum):
    UNICAST = 1
    EVPN = 70  # RFC 7432 section 20


# RFC 4724 section 3: Restart Flags (top 4 bits of the 16) and per-AFI Flags.
GR_RESTART_STATE = 0x8  # R bit
GR_NOTIFICATION = 0x4  # N bit, RFC 8538
GR_FORWARDING_STATE = 0x80  # F bit in the per-AFI/SAFI flags


# --- RFC 4271 section 4.3: path attributes ----------------------------------------------
class AttrFlag(IntFlag):
    OPTIONAL = 0x80
    TRANSITIVE = 0x40
    PARTIAL = 0x20
    EXTENDED_LENGTH = 0x10


WELL_KNOWN = AttrFlag.TRANSITIVE
OPTIONAL_TRANSITIVE = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE
OPTIONAL_NON_TRANSITIVE = AttrFlag.OPTIONAL


class AttrType(IntEnum):
    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    ATOMIC_AGGREGATE = 6
    AGGREGATOR = 7
    COMMUNITIES = 8  # RFC 1997
    ORIGINATOR_ID = 9  # RFC 4456
    CLUSTER_LIST = 10  # RFC 4456
    MP_REACH_NLRI = 14  # RFC 4760
    MP_UNREACH_NLRI = 15  # RFC 4760
    EXTENDED_COMMUNITIES = 16  # RFC 4360
    AS4_PATH = 17  # RFC 6793
    PMSI_TUNNEL = 22  # RFC 6514 section 5


class Origin(IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class AsSegmentType(IntEnum):
    AS_SET = 1
    AS_SEQUENCE = 2
    AS_CONFED_SEQUENCE = 3  # RFC 5065
    AS_CONFED_SET = 4  # RFC 5065


# --- RFC 7606: what to do with a malformed UPDATE ----------------------------------------
class ErrorAction(StrEnum):
    """Ordered by severity (RFC 7606 section 3 h: the most severe one applies)."""

    NONE = "none"
    ATTRIBUTE_DISCARD = "attribute-discard"
    TREAT_AS_WITHDRAW = "treat-as-withdraw"
    SESSION_RESET = "session-reset"


ACTION_SEVERITY = {a: i for i, a in enumerate(ErrorAction)}


# --- RFC 7432 section 7: EVPN route types ------------------------------------------------
class EvpnRouteType(IntEnum):
    ETHERNET_AUTO_DISCOVERY = 1
    MAC_IP_ADVERTISEMENT = 2
    INCLUSIVE_MULTICAST = 3
    ETHERNET_SEGMENT = 4
    IP_PREFIX = 5  # RFC 9136


ESI_LEN = 10
MAC_LEN_BITS = 48
RD_LEN = 8


class RdType(IntEnum):  # RFC 4364 section 4.2
    AS2 = 0
    IPV4 = 1
    AS4 = 2


RD_IPV4_NUMBER_MAX = 0xFFFF  # RFC 4364 section 4.2: type 1 is IPv4 address (4 octets) : number (2 octets)


# --- RFC 4360 / RFC 7153: extended communities (high type octet, sub-type) ----------------
EXT_COMMUNITY_LEN = 8
EXT_NON_TRANSITIVE = 0x40  # the T bit of the high type octet


class ExtType(IntEnum):
    TWO_OCTET_AS = 0x00
    IPV4_ADDRESS = 0x01
    FOUR_OCTET_AS = 0x02
    OPAQUE = 0x03
    EVPN = 0x06  # RFC 7153 section 5.2.1


class ExtSubtype(IntEnum):
    ROUTE_TARGET = 0x02  # under types 0x00/0x01/0x02
    ENCAPSULATION = 0x0C  # opaque, RFC 9012 section 4.1
    DEFAULT_GATEWAY = 0x0D  # opaque, RFC 7432 section 7.8
    MAC_MOBILITY = 0x00  # EVPN, RFC 7432 section 7.7
    ROUTERS_MAC = 0x03  # EVPN, RFC 9135 section 8.1


class TunnelEncap(IntEnum):  # RFC 9012 / IANA BGP Tunnel Encapsulation types
    VXLAN = 8
    NVGRE = 9
    MPLS = 10
    GENEVE = 19


MAC_MOBILITY_STICKY = 0x01  # RFC 7432 section 7.7


# --- RFC 6514 section 5: PMSI tunnel attribute -------------------------------------------
class PmsiTunnelType(IntEnum):
    NO_TUNNEL = 0
    RSVP_TE_P2MP = 1
    MLDP_P2MP = 2
    PIM_SSM = 3
    PIM_SM = 4
    BIDIR_PIM = 5
    INGRESS_REPLICATION = 6
    MLDP_MP2MP = 7


PMSI_LEAF_INFO_REQUIRED = 0x01


# === Tuning (ours, not the RFCs') =========================================================
DEFAULT_HOLD_TIME = 90  # seconds offered in OPEN; RFC 4271 section 10 suggests 90
DEFAULT_LOCAL_PREF = 100

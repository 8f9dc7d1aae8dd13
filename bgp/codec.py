"""BGP-4 message codec (RFC 4271 section 4), sans-IO: bytes in, dataclasses out.

``next_frame`` cuts one message off a byte stream; ``decode`` parses one whole
message. OPEN, KEEPALIVE, NOTIFICATION and ROUTE-REFRESH errors raise
``RemoteBgpError`` carrying the NOTIFICATION to send. An UPDATE never raises:
it yields an ``UpdateResult`` classified per RFC 7606 (session reset,
treat-as-withdraw, attribute discard, or clean). Path attributes live in
``bgp.attributes``, registered by type code; unknown optional ones are
kept byte for byte. Anything that decodes cleanly re-encodes
to the same bytes (attribute flags are stored only when they differ from what
we would send, see ``PathAttribute.flags``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from bgp.attributes import (
    ATTRIBUTE_CLASSES,
    AsPath,
    MpReachNlri,
    MpUnreachNlri,
    Nlri,
    PathAttribute,
    UnknownAttribute,
    decode_prefixes,
    encode_prefixes,
    standard_evpn_attributes,
)
from bgp.capabilities import (
    Capability,
    FourOctetAsCap,
    GracefulRestartCap,
    MultiprotocolCap,
    RouteRefreshCap,
    _decode_capability,
)
from bgp.constants import (
    ACTION_SEVERITY,
    AS_TRANS,
    BGP_VERSION,
    DEFAULT_HOLD_TIME,
    DEFAULT_LOCAL_PREF,
    HEADER_LEN,
    MARKER,
    MAX_MESSAGE_LEN,
    MIN_HOLD_TIME,
    MIN_LENGTH,
    Afi,
    AttrFlag,
    AttrType,
    CapabilityCode,
    ErrorAction,
    ErrorCode,
    HeaderSubcode,
    MessageType,
    OpenSubcode,
    OptParamType,
    Origin,
    RouteRefreshSubcode,
    Safi,
    UpdateSubcode,
)
from bgp.errors import BgpError, LocalBgpError, Reader, RemoteBgpError, check_uint
from bgp.evpn_nlri import EvpnRoute, ExtCommunity, PmsiTunnel

# --- Header, RFC 4271 section 4.1 ---------------------------------------------------------
#   +-------------------------------+
#   |  Marker (16 octets, all ones) |
#   +---------------+---------------+
#   |  Length (2)   |  Type (1)     |
#   +---------------+---------------+


def _header_error(subcode: int, message: str, data: bytes = b"") -> RemoteBgpError:
    return RemoteBgpError(message, code=ErrorCode.MESSAGE_HEADER, subcode=subcode, data=data)


def _check_header(buffer: bytes) -> tuple[int, int]:
    """Length and type of the message at the start of ``buffer`` (RFC 4271 section 6.1)."""
    if buffer[:16] != MARKER:
        raise _header_error(HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, "marker is not all ones")
    length, msg_type = int.from_bytes(buffer[16:18], "big"), buffer[18]
    if msg_type not in MIN_LENGTH:
        raise _header_error(HeaderSubcode.BAD_MESSAGE_TYPE, f"message type {msg_type}", bytes((msg_type,)))
    minimum = MIN_LENGTH[MessageType(msg_type)]
    exact = msg_type in (MessageType.KEEPALIVE, MessageType.ROUTE_REFRESH)  # fixed-size messages
    if not minimum <= length <= MAX_MESSAGE_LEN or (exact and length != minimum):
        if msg_type == MessageType.ROUTE_REFRESH and HEADER_LEN <= length <= MAX_MESSAGE_LEN:
            raise RemoteBgpError(f"ROUTE-REFRESH of {length} octets", code=ErrorCode.ROUTE_REFRESH,
                                 subcode=RouteRefreshSubcode.INVALID_MESSAGE_LENGTH, data=buffer[:length])
        raise _header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, f"length {length} for type {msg_type}",
                            buffer[16:18])
    return length, msg_type


def next_frame(buffer: bytes) -> tuple[bytes | None, bytes]:
    """Split one whole message off a stream: (message, rest), or (None, buffer) if incomplete."""
    if len(buffer) < HEADER_LEN:
        return None, buffer
    length, _ = _check_header(buffer)
    if len(buffer) < length:
        return None, buffer
    return bytes(buffer[:length]), bytes(buffer[length:])


def _frame(msg_type: int, body: bytes) -> bytes:
    length = HEADER_LEN + len(body)
    if length > MAX_MESSAGE_LEN:
        raise LocalBgpError(f"message of {length} octets exceeds {MAX_MESSAGE_LEN}; split the UPDATE")
    return MARKER + length.to_bytes(2, "big") + bytes((msg_type,)) + body


# --- OPEN, RFC 4271 section 4.2 -----------------------------------------------------------
#   | Version (1) | My AS (2) | Hold Time (2) | BGP Identifier (4) | Opt Parm Len (1) |
#   | Optional Parameters: | Parm. Type (1) | Parm. Length (1) | Parameter Value | ...
# Each optional parameter of type 2 holds one or more capabilities (RFC 5492
# section 4); ``params`` keeps that grouping so the bytes round-trip.
def _open_error(subcode: int, message: str, data: bytes = b"") -> RemoteBgpError:
    return RemoteBgpError(message, code=ErrorCode.OPEN_MESSAGE, subcode=subcode, data=data)


@dataclass(frozen=True)
class Open:
    TYPE = MessageType.OPEN
    my_as: int  # the 2-octet field: AS_TRANS when our AS needs 4 octets (RFC 6793 section 4.1)
    hold_time: int
    bgp_id: IPv4Address
    params: tuple[tuple[Capability, ...], ...] = ()
    version: int = BGP_VERSION

    @classmethod
    def build(
        cls, asn: int, bgp_id: IPv4Address | str, *, hold_time: int = DEFAULT_HOLD_TIME,
        families: tuple[tuple[int, int], ...] = ((Afi.L2VPN, Safi.EVPN),), route_refresh: bool = True,
        graceful_restart: GracefulRestartCap | None = None, extra: tuple[Capability, ...] = (),
    ) -> Open:
        """The OPEN nsg sends: one capability per optional parameter, which every peer accepts."""
        caps: list[Capability] = [MultiprotocolCap(afi, safi) for afi, safi in families]
        if route_refresh:
            caps.append(RouteRefreshCap())
        if graceful_restart is not None:
            caps.append(graceful_restart)
        caps += [FourOctetAsCap(asn), *extra]
        return cls(asn if asn < 1 << 16 else AS_TRANS, hold_time, IPv4Address(bgp_id), tuple((c,) for c in caps))

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        return tuple(c for group in self.params for c in group)

    def capability(self, code: int) -> Capability | None:
        return next((c for c in self.capabilities if c.code == code), None)

    @property
    def asn(self) -> int:
        """The speaker's real AS: from the 4-octet AS capability when present (RFC 6793 section 4.1)."""
        cap = self.capability(CapabilityCode.FOUR_OCTET_AS)
        return cap.asn if isinstance(cap, FourOctetAsCap) else self.my_as

    @property
    def families(self) -> tuple[tuple[int, int], ...]:
        return tuple((c.afi, c.safi) for c in self.capabilities if isinstance(c, MultiprotocolCap))

    def encode(self, asn4: bool = True) -> bytes:
        check_uint("my_as", self.my_as, 16)
        check_uint("hold_time", self.hold_time, 16)
        if 0 < self.hold_time < MIN_HOLD_TIME:
            raise LocalBgpError(f"hold time {self.hold_time} must be 0 or >= {MIN_HOLD_TIME}")
        params = b""
        for group in self.params:
            value = b"".join(c.encode() for c in group)
            check_uint("optional parameter length", len(value), 8)
            params += bytes((OptParamType.CAPABILITIES, len(value))) + value
        check_uint("optional parameters length", len(params), 8)
        body = bytes((self.version,)) + self.my_as.to_bytes(2, "big") + self.hold_time.to_bytes(2, "big")
        return _frame(self.TYPE, body + self.bgp_id.packed + bytes((len(params),)) + params)

    @classmethod
    def decode_body(cls, body: bytes) -> Open:
        r = Reader(body, "OPEN", ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSPECIFIC)
        version = r.u8()
        if version != BGP_VERSION:
            raise _open_error(OpenSubcode.UNSUPPORTED_VERSION_NUMBER, f"version {version}",
                              BGP_VERSION.to_bytes(2, "big"))
        my_as, hold_time, bgp_id = r.u16(), r.u16(), IPv4Address(r.take(4))
        if 0 < hold_time < MIN_HOLD_TIME:
            raise _open_error(OpenSubcode.UNACCEPTABLE_HOLD_TIME, f"hold time {hold_time}")
        if int(bgp_id) == 0:  # RFC 6286 section 2.1: a non-zero 32-bit quantity
            raise _open_error(OpenSubcode.BAD_BGP_IDENTIFIER, "BGP identifier 0.0.0.0")
        pr = Reader(r.take(r.u8()), "OPEN optional parameters", ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSPECIFIC)
        r.end()
        params = []
        while pr.remaining:
            ptype, value = pr.u8(), pr.take(pr.u8())
            if ptype != OptParamType.CAPABILITIES:
                raise _open_error(OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, f"optional parameter {ptype}")
            cr = Reader(value, "capabilities", ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSPECIFIC)
            group = []
            while cr.remaining:
                code = cr.u8()
                group.append(_decode_capability(code, cr.take(cr.u8())))
            params.append(tuple(group))
        return cls(my_as, hold_time, bgp_id, tuple(params), version)


# --- KEEPALIVE (4.4), NOTIFICATION (4.5), ROUTE-REFRESH (RFC 2918 section 3) --------------
@dataclass(frozen=True)
class Keepalive:
    TYPE = MessageType.KEEPALIVE

    def encode(self, asn4: bool = True) -> bytes:
        return _frame(self.TYPE, b"")


#   | Error code (1) | Error subcode (1) | Data (variable) |
@dataclass(frozen=True)
class Notification:
    TYPE = MessageType.NOTIFICATION
    code: int
    subcode: int = 0
    data: bytes = b""

    @classmethod
    def from_error(cls, error: BgpError) -> Notification:
        return cls(error.code, error.subcode, error.data)

    def encode(self, asn4: bool = True) -> bytes:
        check_uint("code", self.code, 8)
        check_uint("subcode", self.subcode, 8)
        return _frame(self.TYPE, bytes((self.code, self.subcode)) + self.data)

    @classmethod
    def decode_body(cls, body: bytes) -> Notification:
        r = Reader(body, "NOTIFICATION", ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_LENGTH)
        return cls(r.u8(), r.u8(), r.rest())


#   | AFI (2) | Reserved / subtype (1, RFC 7313) | SAFI (1) |
@dataclass(frozen=True)
class RouteRefresh:
    TYPE = MessageType.ROUTE_REFRESH
    afi: int
    safi: int
    subtype: int = 0

    def encode(self, asn4: bool = True) -> bytes:
        check_uint("afi", self.afi, 16)
        check_uint("safi", self.safi, 8)
        check_uint("subtype", self.subtype, 8)
        return _frame(self.TYPE, self.afi.to_bytes(2, "big") + bytes((self.subtype, self.safi)))

    @classmethod
    def decode_body(cls, body: bytes) -> RouteRefresh:
        return cls(int.from_bytes(body[:2], "big"), body[3], body[2])  # length 4 checked by the header


# --- UPDATE, RFC 4271 section 4.3 ---------------------------------------------------------
#   | Withdrawn Routes Length (2) | Withdrawn Routes (variable)            |
#   | Total Path Attribute Length (2) | Path Attributes (variable)         |
#   | Network Layer Reachability Information (variable, IPv4 unicast)   |
@dataclass(frozen=True)
class Update:
    TYPE = MessageType.UPDATE
    withdrawn: tuple[Nlri, ...] = ()
    attributes: tuple[PathAttribute, ...] = ()
    nlri: tuple[Nlri, ...] = ()

    @classmethod
    def for_evpn(
        cls, nlri: tuple[EvpnRoute, ...] | list[EvpnRoute], next_hop: IPv4Address | str,
        communities: tuple[ExtCommunity, ...] | list[ExtCommunity] = (), pmsi: PmsiTunnel | None = None, *,
        as_path: AsPath | tuple[int, ...] = (), local_pref: int | None = DEFAULT_LOCAL_PREF,
        origin: int = Origin.IGP,
    ) -> Update:
        """An UPDATE advertising EVPN routes (AFI 25 / SAFI 70) with MP_REACH_NLRI first
        (RFC 7606 section 5.1), then the other attributes by type code."""
        attrs = standard_evpn_attributes(tuple(nlri), IPv4Address(next_hop), tuple(communities), pmsi,
                                         as_path, local_pref, origin)
        return cls(attributes=attrs)

    @classmethod
    def withdraw_evpn(cls, routes: tuple[EvpnRoute, ...] | list[EvpnRoute]) -> Update:
        return cls(attributes=(MpUnreachNlri(Afi.L2VPN, Safi.EVPN, tuple(routes)),))

    def get(self, type_code: int) -> PathAttribute | None:
        return next((a for a in self.attributes if a.type_code == type_code), None)

    @property
    def mp_reach(self) -> MpReachNlri | None:
        attr = self.get(AttrType.MP_REACH_NLRI)
        return attr if isinstance(attr, MpReachNlri) else None

    @property
    def mp_unreach(self) -> MpUnreachNlri | None:
        attr = self.get(AttrType.MP_UNREACH_NLRI)
        return attr if isinstance(attr, MpUnreachNlri) else None

    def propagated(self) -> Update:
        """The attributes as a reflector passes them on (RFC 4271 section 5): unknown
        optional transitive ones get the Partial bit, unknown non-transitive ones go."""
        attrs = []
        for attr in self.attributes:
            if not isinstance(attr, UnknownAttribute):
                attrs.append(attr)
            elif attr.raw_flags & AttrFlag.TRANSITIVE:
                attrs.append(replace(attr, raw_flags=attr.raw_flags | AttrFlag.PARTIAL))
        return replace(self, attributes=tuple(attrs))

    def encode(self, asn4: bool = True) -> bytes:
        withdrawn, nlri = encode_prefixes(self.withdrawn), encode_prefixes(self.nlri)
        attrs = b"".join(a.encode(asn4) for a in self.attributes)
        for part, name in ((withdrawn, "withdrawn routes"), (attrs, "path attributes")):
            check_uint(f"{name} length", len(part), 16)
        body = len(withdrawn).to_bytes(2, "big") + withdrawn + len(attrs).to_bytes(2, "big") + attrs + nlri
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class UpdateResult:
    """A received UPDATE after RFC 7606 error handling.

    action NONE: ``update`` is the message. ATTRIBUTE_DISCARD: ``update`` lacks the
    attributes in ``discarded_attrs`` (malformed, or duplicates per section 3 g).
    TREAT_AS_WITHDRAW: ``update`` is None and every route the message carried
    (NLRI, MP_REACH, and the withdrawals) is in ``withdraw_nlri``. SESSION_RESET:
    ``update`` is None; send ``Notification.from_error(error)`` and close.
    ``error`` is the most severe error found (the first one among equals).
    """

    action: ErrorAction
    update: Update | None = None
    withdraw_nlri: tuple[Nlri, ...] = ()
    discarded_attrs: tuple[int, ...] = ()
    error: BgpError | None = None

    @property
    def session_reset(self) -> bool:
        return self.action == ErrorAction.SESSION_RESET


def _update_error(subcode: int, message: str, data: bytes = b"") -> RemoteBgpError:
    return RemoteBgpError(message, code=ErrorCode.UPDATE_MESSAGE, subcode=subcode, data=data)


@dataclass
class _Findings:
    action: ErrorAction = ErrorAction.NONE
    error: BgpError | None = None
    discarded: list[int] = field(default_factory=list)

    def add(self, action: ErrorAction, error: BgpError) -> None:
        if ACTION_SEVERITY[action] > ACTION_SEVERITY[self.action]:
            self.action, self.error = action, error


def _read_attributes(data: bytes, asn4: bool, found: _Findings) -> list[PathAttribute]:
    r = Reader(data, "path attributes", ErrorCode.UPDATE_MESSAGE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST)
    attrs: list[PathAttribute] = []
    seen: set[int] = set()
    while r.remaining:
        start = r.remaining
        # RFC 7606 section 4: too few octets left for a header, or a length that
        # overruns the total, is treat-as-withdraw; the Total Path Attribute Length
        # still locates the NLRI. An overrunning MP attribute hides its NLRI: reset.
        if r.remaining < 3 or (data[-r.remaining] & AttrFlag.EXTENDED_LENGTH and r.remaining < 4):
            found.add(ErrorAction.TREAT_AS_WITHDRAW, _update_error(
                UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"{r.remaining} octets left, too few for an attribute"))
            break
        flags, type_code = r.u8(), r.u8()
        length = r.u16() if flags & AttrFlag.EXTENDED_LENGTH else r.u8()
        if length > r.remaining:
            action = (ErrorAction.SESSION_RESET if type_code in (AttrType.MP_REACH_NLRI, AttrType.MP_UNREACH_NLRI)
                      else ErrorAction.TREAT_AS_WITHDRAW)
            found.add(action, _update_error(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR,
                                            f"attribute {type_code} length {length} overruns {r.remaining}",
                                            data[len(data) - start :]))
            break
        value = r.take(length)
        whole = data[len(data) - start : len(data) - r.remaining]  # for the NOTIFICATION data (6.3)
        if type_code in seen:  # RFC 7606 section 3 g
            if type_code in (AttrType.MP_REACH_NLRI, AttrType.MP_UNREACH_NLRI):
                found.add(ErrorAction.SESSION_RESET, _update_error(
                    UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, f"attribute {type_code} repeated", whole))
            else:
                found.discarded.append(type_code)
            continue
        seen.add(type_code)
        cls = ATTRIBUTE_CLASSES.get(type_code)
        if cls is None:
            if not flags & AttrFlag.OPTIONAL:  # RFC 4271 section 6.3
                found.add(ErrorAction.SESSION_RESET, _update_error(
                    UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, f"well-known attribute {type_code}", whole))
                continue
            attrs.append(UnknownAttribute(type_code, value, raw_flags=flags))
            continue
        try:
            attr = cls.decode_value(value, asn4=asn4, flags=flags)
        except RemoteBgpError as exc:
            err = _update_error(exc.subcode if exc.code == ErrorCode.UPDATE_MESSAGE else cls.ERROR_SUBCODE,
                                f"{AttrType(type_code).name}: {exc}", whole)
            found.add(cls.ON_ERROR, err)
            if cls.ON_ERROR == ErrorAction.ATTRIBUTE_DISCARD:
                found.discarded.append(type_code)
            continue
        # RFC 7606 section 3 c: Optional/Transitive bits that contradict the attribute.
        if flags & (AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE) != cls.FLAGS:
            found.add(ErrorAction.TREAT_AS_WITHDRAW, _update_error(
                UpdateSubcode.ATTRIBUTE_FLAGS_ERROR, f"{AttrType(type_code).name}: flags {flags:#04x}", whole))
        attrs.append(attr)
    return attrs


def _check_mandatory(attrs: list[PathAttribute], nlri: tuple[Nlri, ...], found: _Findings) -> None:
    """RFC 7606 section 3 d: a well-known mandatory attribute missing from an UPDATE
    that carries NLRI is treat-as-withdraw. NEXT_HOP is needed only for the IPv4 NLRI
    field (RFC 4760 section 3); LOCAL_PREF on iBGP is left to the session layer."""
    reach = next((a for a in attrs if isinstance(a, MpReachNlri)), None)
    need: list[int] = []
    if nlri or (reach is not None and reach.nlri):
        need = [AttrType.ORIGIN, AttrType.AS_PATH]
    if nlri:
        need.append(AttrType.NEXT_HOP)
    present = {a.type_code for a in attrs}
    for type_code in need:
        if type_code not in present:
            found.add(ErrorAction.TREAT_AS_WITHDRAW, _update_error(
                UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE, f"{AttrType(type_code).name} missing",
                bytes((type_code,))))


def decode_update(body: bytes, *, asn4: bool = True) -> UpdateResult:
    """Parse an UPDATE body (after the header) and classify any error per RFC 7606."""
    found = _Findings()
    try:
        r = Reader(body, "UPDATE", ErrorCode.UPDATE_MESSAGE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST)
        withdrawn_raw = r.take(r.u16())
        attrs_raw = r.take(r.u16())  # RFC 7606 section 4: these two lengths wrong -> session reset
        withdrawn = decode_prefixes(withdrawn_raw, "withdrawn routes")
        nlri = decode_prefixes(r.rest(), "NLRI")  # RFC 7606 section 5.3: bad NLRI -> session reset
    except RemoteBgpError as exc:
        return UpdateResult(ErrorAction.SESSION_RESET, error=exc)
    attrs = _read_attributes(attrs_raw, asn4, found)
    _check_mandatory(attrs, nlri, found)
    if found.action == ErrorAction.SESSION_RESET:
        return UpdateResult(found.action, error=found.error)
    if found.action == ErrorAction.TREAT_AS_WITHDRAW:
        routes = list(withdrawn) + list(nlri)
        for attr in attrs:
            if isinstance(attr, MpReachNlri | MpUnreachNlri):
                routes += attr.nlri
        return UpdateResult(found.action, withdraw_nlri=tuple(routes), discarded_attrs=tuple(found.discarded),
                            error=found.error)
    action = ErrorAction.ATTRIBUTE_DISCARD if found.discarded else found.action
    error = found.error or (_update_error(UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "duplicate attributes")
                            if found.discarded else None)
    return UpdateResult(action, Update(withdrawn, tuple(attrs), nlri), discarded_attrs=tuple(found.discarded),
                        error=error)


Message = Open | Update | Notification | Keepalive | RouteRefresh


def decode(data: bytes, *, asn4: bool = True) -> Open | Notification | Keepalive | RouteRefresh | UpdateResult:
    """One whole message. Raises ``RemoteBgpError`` for header, OPEN, NOTIFICATION and
    ROUTE-REFRESH errors; an UPDATE always comes back as an ``UpdateResult``.
    ``asn4``: both sides sent the 4-octet AS capability, so AS_PATH carries 4-octet ASNs."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise _header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, f"{len(data)} octets, shorter than a header",
                            len(data).to_bytes(2, "big"))
    length, msg_type = _check_header(data)
    if length != len(data):
        raise _header_error(HeaderSubcode.BAD_MESSAGE_LENGTH, f"header says {length}, got {len(data)} octets",
                            data[16:18])
    body = data[HEADER_LEN:]
    if msg_type == MessageType.UPDATE:
        return decode_update(body, asn4=asn4)
    if msg_type == MessageType.OPEN:
        return Open.decode_body(body)
    if msg_type == MessageType.NOTIFICATION:
        return Notification.decode_body(body)
    if msg_type == MessageType.ROUTE_REFRESH:
        return RouteRefresh.decode_body(body)
    return Keepalive()

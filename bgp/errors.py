"""Errors of the BGP codec, saying whose fault it was and which NOTIFICATION fits.

A ``RemoteBgpError`` means the peer sent something malformed; its ``code``,
``subcode`` and ``data`` are what the NOTIFICATION (RFC 4271 section 4.5) should
carry, should the caller decide the session must go (RFC 7606 may say otherwise
for UPDATE errors: see ``codec.UpdateResult``). A ``LocalBgpError`` is our own
bad value caught before it reaches the wire.

``Reader`` is the shared bounds-checked cursor (``octets.Reader``) made to speak
BGP: every short read is a remote error, raised with the code/subcode the caller
chose for the structure being read.
"""

from __future__ import annotations

from typing import ClassVar

import octets
from bgp.constants import ErrorCode, UpdateSubcode


class BgpError(Exception):
    """Base of all BGP codec errors."""

    fault: ClassVar[str] = "unknown"

    def __init__(self, message: str, *, code: int = 0, subcode: int = 0, data: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, code={self.code}, subcode={self.subcode})"


class LocalBgpError(BgpError):
    """We tried to build something that does not fit the wire format: a bug on our side."""

    fault = "local"


class RemoteBgpError(BgpError):
    """The peer sent something malformed or unacceptable."""

    fault = "remote"


def check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise LocalBgpError(f"{name}={value!r} does not fit {bits} bits")


class Reader(octets.Reader):
    """The shared bounds-checked cursor (``octets``); a short read or trailing octets raise
    ``RemoteBgpError`` with the code/subcode given for this structure."""

    __slots__ = ("_code", "_subcode")

    def __init__(
        self,
        data: bytes,
        what: str,
        code: int = ErrorCode.UPDATE_MESSAGE,
        subcode: int = UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR,
    ) -> None:
        super().__init__(data, what)
        self._code, self._subcode = code, subcode

    def error(self, message: str, data: bytes = b"") -> RemoteBgpError:
        return RemoteBgpError(f"{self._what}: {message}", code=self._code, subcode=self._subcode, data=data)

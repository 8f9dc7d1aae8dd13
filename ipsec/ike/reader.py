"""Bounds-checked reading (the shared ``octets.Reader``, raising IKE errors) and width-checked
construction, shared by the IKE payload codecs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import octets
from ipsec.ike.constants import NotifyType
from ipsec.ike.errors import LocalProtocolError, RemoteProtocolError


def syntax_error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, notify=NotifyType.INVALID_SYNTAX)


class Reader(octets.Reader):
    """The shared bounds-checked cursor (``octets``): a short read or trailing octets raise
    INVALID_SYNTAX (a remote error), never IndexError."""

    __slots__ = ()

    def error(self, message: str) -> RemoteProtocolError:
        return syntax_error(f"{self._what}: {message}")


def _check_uint(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise LocalProtocolError(f"{name}={value} does not fit {bits} bits")


@dataclass(frozen=True)
class _Checked:
    """Checks, on construction, that int fields fit their wire width and that
    bytes/tuple fields fit the length or count field sent in front of them."""

    _WIDTHS: ClassVar[dict[str, int]] = {}  # field name -> bits

    def __post_init__(self) -> None:
        for name, bits in self._WIDTHS.items():
            value = getattr(self, name)
            _check_uint(name, value if isinstance(value, int) else len(value), bits)

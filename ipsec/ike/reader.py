"""Bounds-checked reading and width-checked construction shared by the IKE payload codecs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ipsec.ike.constants import NotifyType
from ipsec.ike.errors import LocalProtocolError, RemoteProtocolError


def syntax_error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, notify=NotifyType.INVALID_SYNTAX)


class Reader:
    """A bounds-checked cursor: a short read raises INVALID_SYNTAX, never IndexError."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = data, 0, what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise syntax_error(f"{self._what}: truncated (need {n} octets, have {self.remaining})")
        self._pos += n
        return self._data[self._pos - n : self._pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def end(self) -> None:
        if self.remaining:
            raise syntax_error(f"{self._what}: {self.remaining} trailing octets")


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

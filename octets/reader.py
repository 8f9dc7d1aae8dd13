"""A bounds-checked cursor over received octets (DESIGN.md convention 7: check lengths before
indexing).

A short read or octets left over raise the reader's error, never IndexError or struct.error. The
error is ``LengthError`` here; a protocol subclasses ``Reader`` and overrides ``error()`` to raise its
own error instead, with its own code (a BGP NOTIFICATION code/subcode, an IKE INVALID_SYNTAX notify)
and saying whose fault it is: octets that do not add up came from the peer.
"""

from __future__ import annotations


class LengthError(ValueError):
    """The octets are shorter than the structure being read says, or longer than it used."""


class Reader:
    """Reads ``data`` front to back; ``what`` names the structure in error messages."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = bytes(data), 0, what

    def error(self, message: str) -> Exception:
        """The exception a failed length check raises (to be raised by the caller too, for a
        structure whose lengths do not add up); protocols override this."""
        return LengthError(f"{self._what}: {message}")

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise self.error(f"truncated (need {n} octets, have {self.remaining})")
        self._pos += n
        return self._data[self._pos - n : self._pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def end(self) -> None:
        """Everything must have been read."""
        if self.remaining:
            raise self.error(f"{self.remaining} trailing octets")

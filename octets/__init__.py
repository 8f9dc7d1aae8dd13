"""Bounds-checked reading of wire formats, shared by the protocol codecs (``bgp``, ``ipsec.ike``).

Imports nothing of this project, so every library may use it without breaking the layering.
"""

from octets.reader import LengthError, Reader

__all__ = ["LengthError", "Reader"]

"""Byte-level mutation for the hypothesis fuzz tests of the wire codecs (IKE, BGP, CMS)."""
from __future__ import annotations

from hypothesis import strategies as st


def mutate(draw: st.DrawFn, data: bytearray) -> None:
    """Apply 1-4 random edits to `data` in place: set, flip a bit, truncate, insert or delete bytes."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at : at + draw(st.integers(1, 8))]

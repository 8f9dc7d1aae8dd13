"""Tests of bootstrap.sources. ``mutate`` is shared by the fuzzers: it damages a valid
message with a few byte edits, which finds more than random bytes alone."""

from __future__ import annotations

from hypothesis import strategies as st

EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 set a byte, 1 cut the tail, 2 insert a byte."""
    buf = bytearray(data)
    for kind, pos, val in edits:
        if not buf:
            break
        at = pos % len(buf)
        if kind == 0:
            buf[at] = val
        elif kind == 1:
            del buf[at:]
        else:
            buf[at:at] = bytes((val,))
    return bytes(buf)

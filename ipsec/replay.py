"""Anti-replay sliding window with 64-bit extended sequence numbers (RFC 4303 3.4.3, Appendix A).

The window is a Python int used as a bitmap: bit i set means sequence number
``top - i`` was received. ``check`` runs before the ICV is verified (it is cheap
and rejects most replays early) and returns the full 64-bit number it inferred;
``accept`` runs only after the ICV verified, so forged packets never move the window.
"""

from __future__ import annotations

MAX_WINDOW = 1 << 16
U32 = 0xFFFFFFFF


class ReplayWindow:
    __slots__ = ("bitmap", "esn", "size", "top")

    def __init__(self, size: int = 1024, esn: bool = True):
        if not 32 <= size <= MAX_WINDOW:
            raise ValueError(f"replay window {size} is outside 32..{MAX_WINDOW}")
        self.size = size
        self.esn = esn
        self.top = 0  # highest authenticated sequence number (64-bit with ESN); 0: none yet
        self.bitmap = 0

    def infer(self, seq_lo: int) -> int:
        """The full sequence number for the low 32 bits on the wire (RFC 4303 A2.2)."""
        if not self.esn:
            return seq_lo
        w = self.size
        tl, th = self.top & U32, self.top >> 32
        if tl >= w - 1:
            # Window lies within one 2^32 subspace.
            seq_hi = th if seq_lo >= tl - w + 1 else th + 1
        else:
            # Window straddles two subspaces.
            seq_hi = th - 1 if seq_lo >= ((tl - w + 1) & U32) else th
            seq_hi = max(seq_hi, 0)
        return (seq_hi << 32) | seq_lo

    def check(self, seq_lo: int) -> int | None:
        """Full sequence number if the packet may be new, None if it is a replay or too old."""
        seq = self.infer(seq_lo)
        if seq == 0:
            return None  # sequence numbers start at 1 (RFC 4303 3.3.3)
        if seq > self.top:
            return seq
        diff = self.top - seq
        if diff >= self.size or (self.bitmap >> diff) & 1:
            return None
        return seq

    def accept(self, seq: int) -> None:
        """Record an authenticated packet."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)

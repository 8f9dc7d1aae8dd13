import random

import pytest

from ipsec.replay import ReplayWindow


def test_in_order_then_replays():
    w = ReplayWindow(64, esn=False)
    for s in range(1, 200):
        assert w.check(s) == s
        w.accept(s)
    assert w.check(199) is None and w.check(150) is None
    assert w.check(135) is None  # 199 - 135 = 64: just outside the window
    assert w.check(0) is None


def test_out_of_order_inside_window():
    w = ReplayWindow(64, esn=False)
    for s in (10, 5, 7, 9, 70):
        assert w.check(s) == s
        w.accept(s)
    assert w.check(7) is None and w.check(10) is None
    assert w.check(8) == 8  # never seen, still inside (70 - 8 < 64)
    assert w.check(6) is None  # 70 - 6 = 64: too old


def test_unauthenticated_packets_do_not_move_the_window():
    w = ReplayWindow(64)
    w.accept(w.check(1))
    assert w.check(10_000) == 10_000  # checked but never accepted (ICV failed)
    assert w.check(2) == 2


def test_esn_crosses_the_32_bit_boundary():
    w = ReplayWindow(128, esn=True)
    w.top = (1 << 32) - 10
    w.bitmap = 1
    # low bits wrapped: inferred into the next subspace
    assert w.check(5) == (1 << 32) + 5
    w.accept((1 << 32) + 5)
    # a late packet from below the boundary is still placed in the old subspace
    assert w.check(0xFFFFFFF8) == (1 << 32) - 8
    w.accept((1 << 32) - 8)
    assert w.check(0xFFFFFFF8) is None


def test_without_esn_no_inference():
    w = ReplayWindow(64, esn=False)
    w.accept(w.check(0xFFFFFFFF))
    assert w.check(5) is None  # 32-bit space: 5 is far behind


def test_bad_sizes():
    with pytest.raises(ValueError, match="outside"):
        ReplayWindow(8)


def test_random_against_a_set_model():
    rnd = random.Random(7)
    w = ReplayWindow(256, esn=False)
    seen: set[int] = set()
    top = 0
    for _ in range(20_000):
        s = max(1, top + rnd.randint(-400, 50))
        got = w.check(s)
        expect_ok = s not in seen and (s > top or top - s < 256)
        assert (got is not None) == expect_ok, (s, top)
        if got is not None:
            w.accept(got)
            seen.add(s)
            top = max(top, s)


def test_esn_too_old_is_read_as_the_next_subspace():
    """RFC 4303 A2.2: below the window means 'wrapped'; the ICV (which covers the high
    bits) then fails, so such a packet is dropped by authentication, not by the window."""
    w = ReplayWindow(64, esn=True)
    for s in range(1, 200):
        w.accept(w.check(s))
    assert w.check(150) is None  # inside the window and seen: replay
    assert w.check(100) == (1 << 32) + 100

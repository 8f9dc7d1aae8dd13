"""Jittered exponential backoff between retries (the channel, zero-touch, the DHCP client).

Pure: the random source is passed in and no clock is read; the caller sleeps. Each wait is the
current delay times a factor drawn uniformly from [1 - jitter, 1 + jitter]; the delay doubles
after each wait up to ``cap`` and goes back to ``first`` on ``reset()``. The jitter spreads 500
gateways that all lost their controller at the same moment over the window instead of having them
come back in one wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(self, first: float, cap: float, *, jitter: float = 0.5,
                 rand: Callable[[], float] = random.random) -> None:
        """``rand()`` returns a float in [0, 1) (random.random; a constant in tests)."""
        if first <= 0 or cap <= 0:
            raise ValueError(f"backoff waits must be positive, got first={first} cap={cap}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.rand = rand
        self.delay = first  # the un-jittered delay of the next wait

    def next(self) -> float:
        """The next wait in seconds; the one after it is twice as long (up to ``cap``)."""
        wait = self.delay * (1 - self.jitter + 2 * self.jitter * self.rand())
        self.delay = min(self.delay * 2, self.cap)
        return wait

    def reset(self) -> None:
        """It worked for a while: start over with short waits."""
        self.delay = self.first

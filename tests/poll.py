"""Waiting for a condition in tests that drive real processes: poll, return what the condition gave."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(what: str, fn: Callable[[], T], timeout: float = 30.0, every: float = 0.3) -> T:
    """``fn()``'s first truthy value; an AssertionError naming ``what`` once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)

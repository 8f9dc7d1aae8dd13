"""The one jittered exponential backoff (nsg/backoff.py) of the channel, zero-touch and the DHCP client."""

from __future__ import annotations

import asyncio

import pytest

from nsg import zerotouch
from nsg.backoff import Backoff
from nsg.channel import client as client_mod
from nsg.channel.client import ChannelClient


def waits(b: Backoff, n: int) -> list[float]:
    return [round(b.next(), 6) for _ in range(n)]


@pytest.mark.parametrize(("first", "cap", "jitter", "rand", "expected"), [
    (1.0, 60.0, 0.5, 0.5, [1, 2, 4, 8, 16, 32, 60, 60]),  # the middle of the jitter: the plain doubling
    (1.0, 60.0, 0.5, 0.0, [0.5, 1, 2, 4, 8, 16, 30, 30]),  # the low end: half
    (1.0, 60.0, 0.5, 0.999999, [1.5, 3, 6, 12, 24, 48, 90, 90]),  # the high end: one and a half
    (1.0, 30.0, 0.2, 0.0, [0.8, 1.6, 3.2, 6.4, 12.8, 24, 24, 24]),  # the DHCP client's +-20 %
    (2.0, 60.0, 0.5, 0.5, [2, 4, 8, 16, 32, 60, 60, 60]),  # zero-touch's first wait
    (5.0, 4.0, 0.0, 0.3, [5, 4, 4, 4, 4, 4, 4, 4]),  # first above the cap: then the cap
])
def test_waits(first, cap, jitter, rand, expected):
    assert waits(Backoff(first, cap, jitter=jitter, rand=lambda: rand), 8) == pytest.approx(expected, rel=1e-5)


def test_reset_starts_over():
    b = Backoff(1.0, 60.0, rand=lambda: 0.5)
    assert waits(b, 4) == [1, 2, 4, 8]
    b.reset()
    assert waits(b, 2) == [1, 2]


def test_real_randomness_stays_in_the_window():
    b = Backoff(1.0, 8.0)
    for delay in (1, 2, 4, 8, 8, 8):
        assert 0.5 * delay <= b.next() <= 1.5 * delay


@pytest.mark.parametrize("kw", [{"first": 0, "cap": 1}, {"first": 1, "cap": -1}, {"first": 1, "cap": 2, "jitter": 1}])
def test_nonsense_is_refused(kw):
    with pytest.raises(ValueError):
        Backoff(**kw)


def test_the_channel_backs_off_and_starts_over_after_a_session_that_worked(monkeypatch):
    """Fails 3 times, then gets through the hellos once, then fails again: waits 1, 2, 4, then 1 again."""
    monkeypatch.setattr(client_mod, "Backoff", lambda first, cap: Backoff(first, cap, rand=lambda: 0.5))
    client = ChannelClient("wss://192.0.2.1/channel", lambda: None, "NSG-1", None, lambda: 0, backoff=(1.0, 60.0))
    outcomes = iter(["fail", "fail", "fail", "open", "fail", "stop"])
    slept: list[float] = []

    async def session():
        if next(outcomes) == "open":
            client.connected_since = 1.0
        raise OSError("controller gone")

    async def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 5:
            raise asyncio.CancelledError

    monkeypatch.setattr(client, "_session", session)
    monkeypatch.setattr(client_mod.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(client.run())
    assert slept == [1, 2, 4, 1, 2] and client.stats["failures"] == 5


def test_zero_touch_backs_off(tmp_path, monkeypatch):
    monkeypatch.setattr(zerotouch, "Backoff", lambda first, cap: Backoff(first, cap, rand=lambda: 0.5))
    z = zerotouch.ZeroTouch(tmp_path, "wan0", lambda op: None, backoff=(2.0, 10.0))
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 4:
            raise asyncio.CancelledError

    def boom():
        raise OSError("no identity store")

    monkeypatch.setattr(z, "bootstrapped", boom)
    monkeypatch.setattr(zerotouch.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(z.run())
    assert slept == [2, 4, 8, 10] and z.state == "retrying"

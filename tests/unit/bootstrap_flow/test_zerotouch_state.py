"""`nsg status` shows "activation-required" because the bootstrap said so with its error's type, not
because some text -- possibly a server's -- contained the words."""

from __future__ import annotations

import asyncio

import pytest

import nsg.zerotouch as zt
from bootstrap import errors
from bootstrap.errors import Reason, RemoteBootstrapError
from bootstrap.identity import factory_init, make_manufacturer_ca
from bootstrap.sources.model import BootstrapServer


class _Stop(Exception):
    pass


def attempt(tmp_path, monkeypatch, failure: Exception) -> zt.ZeroTouch:
    """One bootstrap attempt that fails with ``failure``; returns the ZeroTouch to inspect."""
    factory_init(tmp_path / "identity", "NSG-7", make_manufacturer_ca(tmp_path / "mfg"))

    class Boot:
        def __init__(self, *_a, **_kw):
            pass

        def done(self):
            return None

        async def run(self, servers):
            raise failure

    async def found(*_a, **_kw):
        return [BootstrapServer("https://198.51.100.1", "dhcp")]

    async def stop(_seconds):
        raise _Stop

    monkeypatch.setattr(zt, "Bootstrapper", Boot)
    monkeypatch.setattr(zt, "discover", found)
    monkeypatch.setattr(zt.asyncio, "sleep", stop)
    z = zt.ZeroTouch(tmp_path, "wan0", lambda op: None)
    with pytest.raises(_Stop):
        asyncio.run(z.run())
    return z


def test_activation_required_is_a_type(tmp_path, monkeypatch):
    z = attempt(tmp_path, monkeypatch, errors.ActivationRequired("enrollment held until the code is given"))
    assert z.state == "activation-required"


def test_a_servers_words_do_not_make_it_activation_required(tmp_path, monkeypatch):
    junk = RemoteBootstrapError("https://198.51.100.1: HTTP 500: b'activation required, says me'",
                                reason=Reason.TRANSPORT)
    z = attempt(tmp_path, monkeypatch, junk)
    assert z.state == "retrying" and "activation required" in z.last_error

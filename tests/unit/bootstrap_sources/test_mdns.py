"""DNS-SD instance -> bootstrap URI (the sans-IO half of mdns.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.sources.mdns import uri_from_service
from bootstrap.sources.model import RemoteProtocolError

PATH = b"/nsg/sztp"
INSTANCE = "nsg-bootstrap._sztp._tcp.local."


@pytest.mark.parametrize(("addresses", "server", "port", "props", "uri"), [
    (["198.18.7.1"], "bs.local.", 8443, {b"path": PATH}, "https://198.18.7.1:8443" + PATH.decode()),
    (["fe80::1", "198.18.7.1"], "bs.local.", 443, {}, "https://198.18.7.1:443"),
    ([], "bs.local.", 443, {b"path": None, b"other": b"x"}, "https://bs.local:443"),
    (["not-an-address"], "bs.local.", 443, {}, "https://bs.local:443"),
])
def test_uri_from_service(addresses, server, port, props, uri):
    assert uri_from_service(addresses, server, port, props, INSTANCE) == uri


@pytest.mark.parametrize(("addresses", "server", "port", "props", "why"), [
    (["198.18.7.1"], None, None, {}, "no valid port"),
    (["198.18.7.1"], None, 0, {}, "no valid port"),
    (["198.18.7.1"], None, 70000, {}, "no valid port"),
    ([], None, 443, {}, "neither an IPv4 address nor a host name"),
    ([], "bad_host.local.", 443, {}, "invalid label"),
    (["198.18.7.1"], None, 443, {b"path": b"restconf"}, "absolute path"),
    (["198.18.7.1"], None, 443, {b"path": b"/a?b"}, "without query"),
    (["198.18.7.1"], None, 443, {b"path": b"/\xff"}, "not ASCII"),
    (["198.18.7.1"], None, 443, {b"path": b"/a b"}, "blank"),
])
def test_bad_announcements_are_the_responders_fault(addresses, server, port, props, why):
    with pytest.raises(RemoteProtocolError, match=why):
        uri_from_service(addresses, server, port, props, INSTANCE)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=20), max_size=3), st.none() | st.text(max_size=30),
       st.none() | st.integers(-5, 70000), st.dictionaries(st.binary(max_size=6), st.none() | st.binary(max_size=40)))
def test_fuzz_raises_only_remote_errors(addresses, server, port, props):
    with contextlib.suppress(RemoteProtocolError):
        uri_from_service(addresses, server, port, props, INSTANCE)

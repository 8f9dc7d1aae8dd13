"""Bootstrap server URIs: RFC 8572 section 8.3 wants https and a host; we refuse the rest."""

from __future__ import annotations

import pytest

from bootstrap.sources.model import RemoteProtocolError, check_bootstrap_uri, check_hostname

GOOD = [
    "https://bootstrap.example.com",
    "https://bootstrap.example.com:8443/sztp",
    "https://198.51.100.7:8443",
    "https://[2001:db8::1]:443/",
    "HTTPS://Bootstrap.Example.COM/",
    "https://bs1",
]
BAD = [
    ("", "empty"),
    ("http://bootstrap.example.com", "https scheme"),
    ("ftp://x.example", "https scheme"),
    ("https://", "no host"),
    ("https:///path", "no host"),
    ("https://user:pw@bs.example.com", "user information"),
    ("https://bs.example.com/#frag", "fragment"),
    ("https://bs.example.com/a b", "blank"),
    ("https://bs.example.com/\x00", "control"),
    ("https://bücher.example", "non-ASCII"),
    ("https://bs.example.com:99999", "parse"),
    ("https://bs.example.com:0", "port 0"),
    ("https://bs.example.com:x", "parse"),
    ("https://[2001:db8::zz]/", "parse"),
    ("https://-bad-.example", "invalid label"),
    ("https://a..example", "invalid label"),
    ("https://1.2.3", "all-numeric"),
    ("https://" + "a" * 64 + ".example", "invalid label"),
]


@pytest.mark.parametrize("uri", GOOD)
def test_good_uris_pass_unchanged(uri):
    assert check_bootstrap_uri(uri) == uri


@pytest.mark.parametrize(("uri", "why"), BAD)
def test_bad_uris_are_remote_faults(uri, why):
    with pytest.raises(RemoteProtocolError, match=why) as info:
        check_bootstrap_uri(uri)
    assert info.value.fault == "remote"


def test_hostnames():
    assert check_hostname("Example.COM.") == "Example.COM"
    long_ok = ".".join(["a" * 63] * 3) + ".example"
    assert check_hostname(long_ok) == long_ok
    with pytest.raises(RemoteProtocolError, match="longer than 253"):
        check_hostname(".".join(["a" * 63] * 4) + ".example")
    with pytest.raises(RemoteProtocolError):
        check_hostname("under_score.example")

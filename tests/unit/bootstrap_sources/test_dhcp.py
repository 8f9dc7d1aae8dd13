"""DHCP option 143 (RFC 8572 sections 8.1, 8.3) and nsg's option 43 sub-options: golden bytes
built by hand from the layouts, hostile inputs, what one udhcpc run yields, and fuzzing. The hook
protocol and the udhcpc supervisor themselves are tested in tests/unit/test_udhcpc.py."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.sources.dhcp import (
    DhcpSource,
    encode_option_43,
    encode_option_143,
    parse_option_43,
    parse_option_143,
    result_from_env,
    udhcpc_argv,
)
from bootstrap.sources.model import DiscoveryContext, LocalDiscoveryError, RemoteProtocolError
from bootstrap.udhcpc import HookEvent, UdhcpcExit
from tests.unit.bootstrap_sources import EDITS, mutate

URI_A = "https://a.example"  # 17 octets
URI_B = "https://198.51.100.7:8443/x"  # 27 octets

# RFC 8572 section 8.3: uri-length (2 octets, network order) then the URI, repeated.
GOLDEN_143 = (
    b"\x00\x11" + b"https://a.example"
    + b"\x00\x1b" + b"https://198.51.100.7:8443/x"
)
# RFC 2132 section 8.4 encapsulation: code, length, value; our sub-option 1 = one URI.
# Here with a pad, a foreign sub-option 7 (ignored) and the end marker dnsmasq appends.
GOLDEN_43 = (
    b"\x01\x11" + b"https://a.example"
    + b"\x00"
    + b"\x07\x02\xab\xcd"
    + b"\x01\x1b" + b"https://198.51.100.7:8443/x"
    + b"\xff"
)


def test_option_143_golden():
    assert parse_option_143(GOLDEN_143) == [URI_A, URI_B]
    assert encode_option_143([URI_A, URI_B]) == GOLDEN_143


def test_option_43_golden():
    assert parse_option_43(GOLDEN_43) == [URI_A, URI_B]
    assert encode_option_43([URI_A, URI_B]) == GOLDEN_43.replace(b"\x00\x07\x02\xab\xcd", b"")[:-1]


def test_option_43_without_our_suboption_names_nothing():
    assert parse_option_43(b"\x07\x02\xab\xcd\xff") == []
    assert parse_option_43(b"") == []
    assert parse_option_43(b"\xff\x00\x00") == []


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "empty"),
    (b"\x00", "too short for a uri-length"),
    (b"\x00\x00", "uri-length 0"),
    (b"\x00\x12" + b"https://a.example", "runs past the end"),
    (b"\x00\x11" + b"https://a.example" + b"\x00", "too short for a uri-length"),
    (b"\x00\x10" + b"http://a.example", "https scheme"),
    (b"\x00\x0a" + b"https://\xff\xfe", "not ASCII"),
    (b"\x00\x08" + b"https://", "no host"),
    (b"\xff\xff" + b"https://a.example", "runs past the end"),
])
def test_option_143_garbage_is_the_servers_fault(payload, why):
    with pytest.raises(RemoteProtocolError, match=why) as info:
        parse_option_143(payload)
    assert info.value.fault == "remote"


@pytest.mark.parametrize(("payload", "why"), [
    (b"\x01", "no length octet"),
    (b"\x01\x20https://a.example", "claims 32 octets"),
    (b"\x01\x00", "empty bootstrap URI"),
    (b"\x01\x10http://a.example", "https scheme"),
    (b"\xff\x01", "after the end"),
])
def test_option_43_garbage_is_the_servers_fault(payload, why):
    with pytest.raises(RemoteProtocolError, match=why):
        parse_option_43(payload)


def test_encoders_refuse_what_does_not_fit():
    with pytest.raises(ValueError):
        encode_option_43(["https://" + "a" * 250 + ".example"])
    with pytest.raises(ValueError):
        encode_option_143([""])


def test_long_143_list_beyond_one_option_instance():
    """RFC 3396 concatenation gives payloads over 255 octets; the parser takes them whole."""
    uris = [f"https://bs{i}.example.net:8443/sztp" for i in range(12)]
    payload = encode_option_143(uris)
    assert len(payload) > 255
    assert parse_option_143(payload) == uris


def test_result_from_udhcpc_env():
    env = {"interface": "wan0", "ip": "198.18.5.10", "mask": "24", "router": "198.18.5.1",
           "dns": "198.18.5.1 198.18.5.2", "domain": "example.com", "opt143": GOLDEN_143.hex(),
           "opt43": encode_option_43([URI_A, "https://c.example"]).hex() + "ff"}
    r = result_from_env("wan0", env)
    assert (r.address, r.prefixlen, r.routers, r.nameservers, r.domain) == (
        "198.18.5.10", 24, ("198.18.5.1",), ("198.18.5.1", "198.18.5.2"), "example.com")
    assert r.uris == [URI_A, URI_B, "https://c.example"]  # 143 first, duplicate A dropped
    assert r.problems == ()


def test_result_keeps_the_usable_part_and_reports_the_rest():
    env = {"ip": "198.18.5.10", "mask": "24", "opt143": "0000", "opt43": encode_option_43([URI_A]).hex(),
           "domain": "bad_domain!", "dns": "198.18.5.1 nonsense"}
    r = result_from_env("wan0", env)
    assert r.uris == [URI_A] and r.domain is None and r.nameservers == ("198.18.5.1",)
    assert len(r.problems) == 3 and "uri-length 0" in r.problems[0]


def test_non_hex_from_udhcpc_is_a_local_fault():
    with pytest.raises(LocalDiscoveryError):
        result_from_env("wan0", {"opt143": "zz"})


def test_udhcpc_command_line(tmp_path):
    argv = udhcpc_argv("/bin/busybox", "wan0", tmp_path / "hook")
    assert argv[:8] == ["/bin/busybox", "udhcpc", "-i", "wan0", "-f", "-q", "-n", "-t"]
    assert argv[argv.index("143") - 1 : argv.index("143") + 1] == ["-O", "143"]
    assert argv[argv.index("43") - 1 : argv.index("43") + 1] == ["-O", "43"]
    assert argv[argv.index("-V") + 1] == "nsg" and argv[-2:] == ["-s", str(tmp_path / "hook")]


def test_run_outcomes_without_a_network():
    src = DhcpSource("wan0")
    with pytest.raises(LocalDiscoveryError, match="No such device") as info:
        src._result(UdhcpcExit(1, (), ("udhcpc: started", "udhcpc: SIOCGIFINDEX: No such device")))
    assert info.value.code == 1 and info.value.fault == "local"
    assert src._result(UdhcpcExit(1, (HookEvent("deconfig", {"interface": "wan0"}),))) is None  # nobody answered
    events = (HookEvent("deconfig", {}), HookEvent("bound", {"ip": "198.18.5.10", "mask": "24",
                                                             "opt143": GOLDEN_143.hex()}))
    assert src._result(UdhcpcExit(0, events)).uris == [URI_A, URI_B]


def test_one_run_through_the_supervisor(tmp_path):
    """DhcpSource.run with a stand-in busybox that runs the hook the way udhcpc does."""
    fake = tmp_path / "busybox"
    fake.write_text('#!/bin/sh\nhook=""\nwhile [ $# -gt 0 ]; do [ "$1" = "-s" ] && hook="$2"; shift; done\n'
                    '"$hook" deconfig\n'
                    f'ip=198.18.5.10 mask=24 domain=example.com opt143={GOLDEN_143.hex()} "$hook" bound\n')
    fake.chmod(0o700)
    result = asyncio.run(DhcpSource("wan0", busybox=str(fake)).run())
    assert result is not None and (result.address, result.domain) == ("198.18.5.10", "example.com")
    assert result.uris == [URI_A, URI_B]


def test_missing_busybox_is_a_local_fault(tmp_path):
    src = DhcpSource("wan0", busybox=str(tmp_path / "no-busybox"))
    with pytest.raises(LocalDiscoveryError, match="cannot start udhcpc"):
        asyncio.run(src.discover(DiscoveryContext()))


FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])






@FUZZ
@given(st.one_of(st.binary(max_size=300), st.builds(mutate, st.just(GOLDEN_143), EDITS)))
def test_fuzz_option_143_raises_only_remote_errors(payload):
    try:
        uris = parse_option_143(payload)
    except RemoteProtocolError:
        return
    assert parse_option_143(encode_option_143(uris)) == uris


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.builds(mutate, st.just(GOLDEN_43), EDITS)))
def test_fuzz_option_43_raises_only_remote_errors(payload):
    try:
        uris = parse_option_43(payload)
    except RemoteProtocolError:
        return
    assert parse_option_43(encode_option_43(uris)) == uris


@FUZZ
@given(st.dictionaries(st.sampled_from(["ip", "mask", "router", "dns", "domain", "opt143", "opt43"]),
                       st.one_of(st.text(max_size=40), st.binary(max_size=40).map(bytes.hex))))
def test_fuzz_lease_env_never_raises_remote_errors(env):
    """Server-controlled values land in ``problems``; only non-hex (udhcpc's fault) raises."""
    try:
        result_from_env("wan0", env)
    except LocalDiscoveryError:
        assert any(k.startswith("opt") for k in env)

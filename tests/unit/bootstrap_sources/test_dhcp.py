"""DHCP option 143 (RFC 8572 sections 8.1, 8.3) and nsg's option 43 sub-options: golden bytes
built by hand from the layouts, hostile inputs, the udhcpc hook round trip, and fuzzing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.sources.dhcp import (
    HOOK_PREFIX,
    DhcpSource,
    encode_option_43,
    encode_option_143,
    hook_script,
    parse_hook_line,
    parse_option_43,
    parse_option_143,
    result_from_env,
    udhcpc_argv,
)
from bootstrap.sources.model import DiscoveryContext, LocalDiscoveryError, RemoteProtocolError
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


def test_hook_lines():
    line = HOOK_PREFIX + json.dumps({"event": "bound", "env": {"ip": "198.18.5.10", "junk": "x"}})
    assert parse_hook_line(line) == ("bound", {"ip": "198.18.5.10"})
    assert parse_hook_line("udhcpc: started") is None
    assert parse_hook_line(HOOK_PREFIX + "{not json") is None
    assert parse_hook_line(HOOK_PREFIX + '{"event": 1, "env": {}}') is None


def test_hook_script_reports_one_json_line(tmp_path):
    """The real script, run the way udhcpc runs it; a newline a server smuggles into a
    string stays inside the JSON line."""
    hook = tmp_path / "hook"
    hook.write_text(hook_script())
    hook.chmod(0o700)
    env = {"PATH": os.environ.get("PATH", ""), "ip": "198.18.5.10", "domain": "x\n" + HOOK_PREFIX + "{}",
           "opt143": GOLDEN_143.hex(), "secret": "not reported"}
    out = subprocess.run([str(hook), "bound"], env=env, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 1
    event, got = parse_hook_line(lines[0])
    assert event == "bound" and got == {k: env[k] for k in ("ip", "domain", "opt143")}


def test_udhcpc_command_line(tmp_path):
    argv = udhcpc_argv("/bin/busybox", "wan0", tmp_path / "hook")
    assert argv[:8] == ["/bin/busybox", "udhcpc", "-i", "wan0", "-f", "-q", "-n", "-t"]
    assert argv[argv.index("143") - 1 : argv.index("143") + 1] == ["-O", "143"]
    assert argv[argv.index("43") - 1 : argv.index("43") + 1] == ["-O", "43"]
    assert argv[argv.index("-V") + 1] == "nsg" and argv[-2:] == ["-s", str(tmp_path / "hook")]


def _line(event: str, **env: str) -> str:
    return HOOK_PREFIX + json.dumps({"event": event, "env": env})


def test_run_outcomes_without_a_network():
    src = DhcpSource("wan0")
    with pytest.raises(LocalDiscoveryError, match="No such device"):
        src._result(1, "", "udhcpc: started\nudhcpc: SIOCGIFINDEX: No such device\n")
    assert src._result(1, _line("deconfig", interface="wan0") + "\n", "") is None  # nobody answered
    out = "\n".join([_line("deconfig"), _line("bound", ip="198.18.5.10", mask="24", opt143=GOLDEN_143.hex())])
    assert src._result(0, out, "").uris == [URI_A, URI_B]


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

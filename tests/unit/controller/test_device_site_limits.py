"""Issue 23 sections 2 and 3: what one client can hold of the controller's device site (TLS on 127.0.0.1), and
what an enrolled box's factory identity can still do there.

- A request head sent a byte at a time, a connection that sends nothing, one idle after a request: each is
  closed within the configured time (short ones here), and counted.
- One client certificate holds at most N connections at once; one source address at most M without a
  certificate. The next one is closed at once.
- SZTP is for boxes that hold no LDevID: once b1 enrolled, its IDevID gets 403 saying why (after the reports
  that end that bootstrap), until the operator resets it; the progress reports kept per box are bounded.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import aiohttp
import pytest

from bootstrap.driver import Bootstrapper, Server
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from bootstrap.sztp import GET_PATH, MEDIA, REPORT_PATH, report_body, request_body
from controller.site_guard import SiteLimits
from tests.unit.controller.fake_gateways import device_site, ldevid_context, make_store

HEAD_S, IDLE_S = 0.6, 1.5
LIMITS = SiteLimits(header_timeout_s=HEAD_S, idle_timeout_s=IDLE_S, max_per_identity=2, max_per_address=3)
B1 = "NSG-51"


def anonymous_tls(svc) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=svc.ca.cert_pem.decode())


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closed the connection (EOF or reset); AssertionError after ``limit``."""
    start = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(65536), limit):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s") from None
    return time.monotonic() - start


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "ctl.db", {"acme": [("b1", B1), ("b2", "NSG-52")]})
    yield s
    s.close()


def test_slow_heads_and_idle_connections_are_closed_in_time(store, tmp_path):
    async def main():
        async with device_site(store, tmp_path, site_limits=LIMITS) as svc:
            took = {}
            # a request head one byte at a time (the slow-header attack): closed at the head timeout
            reader, writer = await asyncio.open_connection("127.0.0.1", svc.port, ssl=anonymous_tls(svc))
            start = time.monotonic()

            async def trickle():
                for byte in b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n":
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.1)

            dribble = asyncio.create_task(trickle())
            await closed_after(reader, 10)
            took["slow head"] = time.monotonic() - start
            dribble.cancel()
            # TCP only, no TLS handshake at all: the same
            reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
            took["no handshake"] = await closed_after(reader, 10)
            # one request, then nothing: closed after the idle timeout, counted from the answer
            reader, writer = await asyncio.open_connection("127.0.0.1", svc.port, ssl=anonymous_tls(svc))
            writer.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
                b"content-length")))
            await reader.readexactly(length)
            took["idle"] = await closed_after(reader, 10)
            return took, dict(svc.guard.counters), head

    took, counters, head = asyncio.run(main())
    print(f"\nclosed after: {', '.join(f'{k} {v:.2f} s' for k, v in took.items())}")
    assert head.startswith(b"HTTP/1.1 200")
    assert HEAD_S - 0.1 <= took["slow head"] <= HEAD_S + 0.5, took
    assert HEAD_S - 0.1 <= took["no handshake"] <= HEAD_S + 0.5, took
    assert IDLE_S - 0.1 <= took["idle"] <= IDLE_S + 0.5, took
    assert counters["header_timeouts"] == 2 and counters["idle_timeouts"] == 1, counters


def test_one_identity_and_one_address_hold_a_bounded_number_of_connections(store, tmp_path):
    async def main():
        async with device_site(store, tmp_path, site_limits=LIMITS) as svc:
            ctx = ldevid_context(svc, tmp_path / "certs", B1)
            held = []
            for _ in range(LIMITS.max_per_identity):
                held.append(await asyncio.open_connection("127.0.0.1", svc.port, ssl=ctx))
            # the next connection with the same certificate is closed once its handshake names it
            reader, _ = await asyncio.open_connection("127.0.0.1", svc.port, ssl=ctx)
            over_identity = await closed_after(reader, 2)
            # another box's certificate is not affected
            other = await asyncio.open_connection("127.0.0.1", svc.port, ssl=ldevid_context(svc, tmp_path / "c2",
                                                                                            "NSG-52"))
            other[1].write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(other[0].readuntil(b"\r\n"), 5)
            # connections without a certificate (yet): counted by source address
            bare = [await asyncio.open_connection("127.0.0.1", svc.port) for _ in range(LIMITS.max_per_address)]
            reader, _ = await asyncio.open_connection("127.0.0.1", svc.port)
            over_address = await closed_after(reader, 2)
            for _, w in held + bare + [other]:
                w.close()
            return over_identity, answer, over_address, dict(svc.guard.counters)

    over_identity, answer, over_address, counters = asyncio.run(main())
    assert over_identity < 1.0 and over_address < 1.0
    assert answer.startswith(b"HTTP/1.1 200")
    assert counters["over_identity_limit"] == 1 and counters["over_address_limit"] == 1, counters


async def sztp(svc, ident: FileIdentityStore, path: str, body: bytes) -> tuple[int, dict | None]:
    ctx = ident.tls_context("idevid")
    ctx.load_verify_locations(cadata=svc.ca.cert_pem.decode())
    async with aiohttp.ClientSession() as http, http.post(
            svc.base_url + path, data=body, headers={"Content-Type": MEDIA}, ssl=ctx) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


def message_of(doc: dict) -> str:
    return doc["ietf-restconf:errors"]["error"][0]["error-message"]


def test_an_enrolled_box_s_factory_identity_no_longer_reaches_sztp(store, tmp_path):
    mfg = make_manufacturer_ca(tmp_path / "mfg")
    b1 = FileIdentityStore(tmp_path / "b1" / "identity")
    factory_init(b1.directory, B1, mfg)
    b2 = FileIdentityStore(tmp_path / "b2" / "identity")
    factory_init(b2.directory, "NSG-52", mfg)
    get = request_body(nonce=None, signed_data_preferred=False, hw_model="x", os_name="nsg", os_version="1")

    async def main():
        async with device_site(store, tmp_path) as svc:
            before = await sztp(svc, b1, GET_PATH, get)
            await Bootstrapper(b1).run([Server(svc.base_url)])  # SZTP, EST: b1 holds its LDevID now
            assert b1.ldevid() is not None
            after = await sztp(svc, b1, GET_PATH, get)
            report = await sztp(svc, b1, REPORT_PATH, report_body("bootstrap-initiated", "again"))
            # reports before enrollment: b2 sends 100; what is kept is bounded
            for i in range(100):
                status, _ = await sztp(svc, b2, REPORT_PATH, report_body("bootstrap-initiated", f"#{i}"))
                assert status == 204
            kept_b1 = [p["type"] for p in svc.sztp.progress[B1]]
            kept_b2 = list(svc.sztp.progress["NSG-52"])
            # the operator resets b1 (a wiped box): SZTP serves it again
            store.gateways.reset_identity("b1")
            reset = await sztp(svc, b1, GET_PATH, get)
            return before, after, report, kept_b1, kept_b2, dict(svc.sztp.counters), reset

    before, after, report, kept_b1, kept_b2, counters, reset = asyncio.run(main())
    assert before[0] == 200
    for status, doc in (after, report):
        assert status == 403 and "enrolled" in message_of(doc) and "reset-identity" in message_of(doc), doc
    # the bootstrap that enrolled it was heard to its end (bootstrap-complete), nothing after
    assert kept_b1[-1] == "bootstrap-complete" and "config-complete" in kept_b1
    assert len(kept_b2) == 32 and kept_b2[-1]["message"] == "#99"
    assert counters["enrolled_refused"] == 2 and counters["reports"] >= 100
    assert reset[0] == 200


def test_serve_takes_the_limits(tmp_path):
    from controller import admin_cli
    from controller.admin_local import _channel_limits, _site_limits
    from controller.api_client import CliError

    parser = admin_cli.argparse.ArgumentParser()
    admin_cli.add_subcommands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["serve", "--db", str(tmp_path / "c.db"), "--site-header-timeout", "5",
                              "--site-idle-timeout", "30", "--site-max-per-identity", "4",
                              "--site-max-per-address", "16", "--site-max-connections", "100",
                              "--channel-send-timeout", "3"])
    assert _site_limits(args) == SiteLimits(header_timeout_s=5, idle_timeout_s=30, max_per_identity=4,
                                            max_per_address=16, max_connections=100)
    assert _channel_limits(args).send_timeout_s == 3
    defaults = parser.parse_args(["serve", "--db", str(tmp_path / "c.db")])
    assert _site_limits(defaults) == SiteLimits()
    for flag, value in (("--site-max-per-identity", "0"), ("--site-idle-timeout", "5"),
                        ("--channel-send-timeout", "0")):
        bad = parser.parse_args(["serve", "--db", str(tmp_path / "c.db"), flag, value])
        with pytest.raises(CliError, match=flag.removeprefix("--").split("-")[0]):
            _site_limits(bad)
            _channel_limits(bad)

"""The management channel over real mTLS on loopback: hello, config, apply results, pushes,
bad frames, unknown gateways, reconnects."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.channel_server import ChannelHub
from nsg.channel import wire
from nsg.channel.client import ChannelClient


def _cert(tmp, name, issuer_key=None, issuer=None, *, ca=False, serial=None, ip=None):
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    subject = x509.Name(attrs)
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject if issuer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    kp, cp = tmp / f"{name}.key", tmp / f"{name}.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kp.chmod(0o600)
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, kp, cp


@pytest.fixture
def pki(tmp_path):
    ca_key, ca, _, ca_pem = _cert(tmp_path, "ca", ca=True)
    _, _, skey, scert = _cert(tmp_path, "server", ca_key, ca, ip="127.0.0.1")
    _, _, gkey, gcert = _cert(tmp_path, "gw", ca_key, ca, serial="NSG-1")
    _, _, xkey, xcert = _cert(tmp_path, "stranger", ca_key, ca, serial="NSG-404")
    return {"ca": ca_pem, "server": (scert, skey), "gw": (gcert, gkey), "stranger": (xcert, xkey)}


def server_ctx(pki):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(pki["server"][0]), str(pki["server"][1]))
    return ctx


def client_ctx(pki, who="gw"):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    ctx.load_cert_chain(str(pki[who][0]), str(pki[who][1]))
    return ctx


async def start(hub, pki, port=0):
    app = web.Application()
    hub.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx(pki))
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def until(pred, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_config_flows_and_results_come_back(pki):
    configs = {"NSG-1": (3, {"schema_version": 1, "system_ip": "198.19.255.1"})}
    applied = []

    async def on_config(msg):
        applied.append(msg.generation)
        return wire.ApplyResult(generation=msg.generation, ok=msg.generation != 4,
                                error=None if msg.generation != 4 else "subnets[0].vni: too big",
                                running=3 if msg.generation == 4 else msg.generation)

    async def main():
        hub = ChannelHub(configs.get)
        runner, port = await start(hub, pki)
        client = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: client_ctx(pki), "NSG-1", on_config,
                               lambda: 0, backoff=(0.05, 0.2))
        task = asyncio.create_task(client.run())
        await until(lambda: applied == [3])
        configs["NSG-1"] = (4, {"bad": True})
        assert await hub.push("NSG-1")
        await until(lambda: len(hub.sessions["NSG-1"].results) == 2)
        results = hub.sessions["NSG-1"].results
        assert [(r.generation, r.ok, r.running) for r in results] == [(3, True, 3), (4, False, 3)]
        assert "vni" in results[1].error
        assert not await hub.push("NSG-1")  # nothing newer
        # a garbage frame from the controller side is answered with an error, the channel stays up
        await hub.sessions["NSG-1"].ws.send_str("{not json")
        await until(lambda: client.stats["bad_frames"] == 1)
        assert client.connected
        # the controller restarts: the client comes back by itself
        await runner.cleanup()
        await until(lambda: not client.connected)
        runner2, _ = await start(hub, pki, port=port)
        await until(lambda: client.stats["connects"] == 2, timeout=10)
        task.cancel()
        await runner2.cleanup()

    asyncio.run(main())


def test_unknown_gateway_and_untrusted_server_are_refused(pki, tmp_path):
    async def main():
        hub = ChannelHub(lambda s: (1, {}) if s == "NSG-1" else None)
        runner, port = await start(hub, pki)

        async def never(_msg):
            raise AssertionError("no config for strangers")

        stranger = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: client_ctx(pki, "stranger"), "NSG-404",
                                 never, lambda: 0)
        with pytest.raises(Exception, match="403"):
            await stranger._session()
        assert hub.counters["refused"] == 1
        # a client that does not trust the server's CA never talks to it
        _, _, _, other_pem = _cert(tmp_path, "otherca", ca=True)
        bad = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(other_pem))
        bad.load_cert_chain(str(pki["gw"][0]), str(pki["gw"][1]))
        c = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: bad, "NSG-1", never, lambda: 0)
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await c._session()
        await runner.cleanup()

    asyncio.run(main())


@pytest.mark.parametrize(("frame", "code"), [
    ("{", "not-json"),
    ('{"type": "config", "generation": 0, "config": {}}', "invalid"),
    ('{"type": "nope"}', "invalid"),
    ('{"type": "hello", "versions": [1], "extra": 1}', "invalid"),
    ("x" * (wire.MAX_FRAME + 1), "too-large"),
])
def test_bad_frames(frame, code):
    with pytest.raises(wire.ChannelProtocolError) as ei:
        wire.decode(frame)
    assert ei.value.code == code


def test_version_choice():
    assert wire.choose_version((1, 7)) == 1
    with pytest.raises(wire.ChannelProtocolError, match="no common version"):
        wire.choose_version((2,))


def test_commit_confirm_over_the_channel(pki):
    """An applied generation is confirmed by the controller; a rolled-back one is remembered across
    reconnects and not pushed again; the gateway's interfaces and its rollback report reach the hub."""
    configs = {"NSG-1": (3, {"schema_version": 1, "system_ip": "198.19.255.1"})}
    confirmed: list[int] = []
    greeting: list[wire._Msg] = []

    async def on_config(msg):
        if msg.generation == 4:  # applied, then undone: reported at once and again after the reconnect
            greeting.append(wire.ApplyResult(generation=4, ok=False, rolled_back=True, running=3,
                                             error="no confirmation within 5 s"))
            return greeting[0]
        return wire.ApplyResult(generation=msg.generation, ok=True, running=msg.generation)

    async def on_confirm(generation):
        confirmed.append(generation)

    async def main():
        hub = ChannelHub(configs.get)
        hub.confirm_s = 42.0
        runner, port = await start(hub, pki)
        client = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: client_ctx(pki), "NSG-1", on_config,
                               lambda: 3, backoff=(0.05, 0.2), on_confirm=on_confirm,
                               greeting=lambda: list(greeting), interfaces=lambda: ("lan0", "wan0"))
        task = asyncio.create_task(client.run())
        await until(lambda: confirmed == [3])
        assert hub.interfaces["NSG-1"] == ("lan0", "wan0")
        configs["NSG-1"] = (4, {"strands": True})
        assert await hub.push("NSG-1")
        await until(lambda: "NSG-1" in hub.failed)
        assert hub.failed["NSG-1"].generation == 4 and hub.counters["rollbacks"] == 1
        assert confirmed == [3]  # no confirm for what was undone
        client.reconnect()
        await until(lambda: client.stats["connects"] == 2)
        await until(lambda: len(hub.sessions["NSG-1"].results) == 1)  # the greeting's report
        assert not await hub.push("NSG-1")  # the failed generation is not sent again
        configs["NSG-1"] = (5, {"fixed": True})
        assert await hub.push("NSG-1")
        await until(lambda: confirmed == [3, 5])
        await until(lambda: "NSG-1" not in hub.failed)  # a newer generation holds
        task.cancel()
        await runner.cleanup()

    asyncio.run(main())


def test_out_of_order_frames_are_answered_counted_and_ignored(pki, caplog):
    """Both ends enforce the order machine in nsg/channel/wire.py on a live session: a second hello or a message the
    sender's side never sends is answered with an error naming it, counted, and changes nothing."""
    configs = {"NSG-1": (3, {"schema_version": 1})}

    async def on_config(msg):
        return wire.ApplyResult(generation=msg.generation, ok=True, running=msg.generation)

    async def main():
        hub = ChannelHub(configs.get)
        runner, port = await start(hub, pki)
        client = ChannelClient(f"wss://127.0.0.1:{port}/channel", lambda: client_ctx(pki), "NSG-1", on_config,
                               lambda: 0, backoff=(0.05, 0.2))
        task = asyncio.create_task(client.run())
        await until(lambda: "NSG-1" in hub.sessions and len(hub.sessions["NSG-1"].results) == 1)
        # the controller misbehaves: hello again, then a gateway's message
        ws = hub.sessions["NSG-1"].ws
        await ws.send_str(wire.encode(wire.Hello(versions=(1,))))
        await ws.send_str(wire.encode(wire.Telemetry(ts=1.0)))
        await until(lambda: client.stats["bad_frames"] == 2)
        await until(lambda: sum("gateway says" in r.getMessage() for r in caplog.records) == 2)
        said = [r.fields["code"] for r in caplog.records if "gateway says" in r.getMessage()]
        assert said == ["order", "direction"]
        # the gateway misbehaves: a controller's message, around its own machine
        await client._ws.send_str(wire.encode(wire.Config(generation=9, config={})))
        await until(lambda: hub.counters["bad_frames"] == 1)
        await until(lambda: any("controller says" in r.getMessage() for r in caplog.records))
        said = [r.fields["code"] for r in caplog.records if "controller says" in r.getMessage()]
        assert said == ["direction"]
        # nothing changed: still connected, still the one result, a push still works
        assert client.connected and client.stats["connects"] == 1 and len(hub.sessions["NSG-1"].results) == 1
        configs["NSG-1"] = (4, {"schema_version": 1})
        assert await hub.push("NSG-1")
        await until(lambda: len(hub.sessions["NSG-1"].results) == 2)
        task.cancel()
        await runner.cleanup()

    with caplog.at_level("WARNING"):
        asyncio.run(main())


@pytest.mark.parametrize(("first", "words"), [
    (wire.Config(generation=1, config={}), "'config' is not sent by the gateway"),
    (wire.Telemetry(ts=1.0), "'telemetry' from the gateway out of order: expected hello"),
    (wire.Hello(versions=(1,), serial="NSG-2"), "the hello names serial 'NSG-2', the certificate 'NSG-1'"),
    (wire.Hello(versions=(7,), serial="NSG-1"), "no common version"),
])
def test_the_hub_wants_the_gateways_own_hello_first(pki, first, words):
    async def main():
        hub = ChannelHub(lambda s: (1, {}) if s == "NSG-1" else None)
        runner, port = await start(hub, pki)
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    f"wss://127.0.0.1:{port}/channel", ssl=client_ctx(pki)) as ws:
                await ws.send_str(wire.encode(first))
                answer = wire.decode((await ws.receive(timeout=5)).data)
                assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        finally:
            await runner.cleanup()
        assert isinstance(answer, wire.Error) and answer.code == "hello" and words in answer.message
        assert hub.counters["bad_frames"] == 1 and hub.sessions == {} and hub.counters["connects"] == 0

    asyncio.run(main())

"""Fake gateways for the controller's abuse tests: the controller's real device site (DeviceServices) on
127.0.0.1 over a real store, LDevIDs issued by its CA, and boxes that speak the channel by hand (RawGateway:
mTLS WebSocket, frames as the test writes them) or as nsg does (nsg.channel.client.ChannelClient)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.api import make_app
from controller.ca import device_subject
from controller.services import DeviceServices
from controller.store import Store

TOKEN = "nsgc_abuse_test"


def uplink(n: int) -> list[dict]:
    return [{"name": "wan0", "interface": "wan0", "mode": "static", "address": f"198.18.{n // 250}.{n % 250 + 2}/16",
             "gateway": "198.18.255.254"}]


def make_store(path: Path, enterprises: dict[str, list[tuple[str, str]]]) -> Store:
    """A store with ``{enterprise: [(gateway name, serial), ...]}``, one subnet each."""
    store = Store(path)
    n = 0
    for i, (ent, gateways) in enumerate(enterprises.items()):
        store.enterprises.create(ent, transport="esp")
        store.enterprises.add_subnet(ent, "corp", vni=100 + i, cidr=f"198.19.{i}.0/24", gateway=f"198.19.{i}.1")
        for name, serial in gateways:
            store.gateways.add(ent, name, serial=serial, uplinks=uplink(n), ports={})
            n += 1
    return store


@contextlib.asynccontextmanager
async def device_site(store: Store, tmp_path: Path, **kw: Any):
    svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg", **kw)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def ldevid_context(svc: DeviceServices, directory: Path, serial: str) -> ssl.SSLContext:
    """A client context holding a fresh LDevID for ``serial`` from the controller's CA (what EST would give)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(device_subject(serial)).sign(key, hashes.SHA256())
    cert = svc.ca.issue(csr, serial_expected=serial, lifetime=datetime.timedelta(days=1))
    directory.mkdir(parents=True, exist_ok=True)
    kp, cp = directory / f"{serial}.key", directory / f"{serial}.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=svc.ca.cert_pem.decode())
    ctx.load_cert_chain(str(cp), str(kp))
    return ctx


class RawGateway:
    """One box speaking the channel by hand: whatever frames the test writes, read only when asked."""

    def __init__(self, svc: DeviceServices, ctx: ssl.SSLContext, serial: str):
        self.url, self.ctx, self.serial = f"wss://127.0.0.1:{svc.port}/channel", ctx, serial
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, generation: int = 0) -> dict:
        """Hello, the controller's hello; returns the first config."""
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.url, ssl=self.ctx, max_msg_size=0, autoping=True)
        await self.send({"type": "hello", "versions": [1], "serial": self.serial, "generation": generation})
        assert (await self.recv())["type"] == "hello"
        config = await self.recv()
        assert config["type"] == "config", config
        return config

    async def send(self, frame: dict | str) -> None:
        assert self.ws is not None
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict:
        """The next frame from the controller as a dict; ``{"type": "nothing"}`` if none came in time."""
        assert self.ws is not None
        try:
            msg = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            return {"type": "nothing", "within_s": timeout}
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return {"type": f"ws-{msg.type.name.lower()}", "data": msg.data, "extra": msg.extra}
        return json.loads(msg.data)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):  # a test's hostile box may be gone already
                await asyncio.wait_for(self.ws.close(), 2)
        if self.http is not None:
            await self.http.close()


@contextlib.asynccontextmanager
async def admin_api(store: Store, svc: DeviceServices):
    """The admin API over the same store and channel hub; yields ``get(path) -> (status, document, octets)``."""
    app = make_app(store, tokens=lambda t: t == TOKEN, hub=svc.hub)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        async def get(path: str) -> tuple[int, Any, int]:
            resp = await client.get("/api/v1" + path, headers={"Authorization": f"Bearer {TOKEN}"})
            raw = await resp.read()
            return resp.status, json.loads(raw), len(raw)

        yield get


async def until(pred, timeout: float = 10.0, every: float = 0.02) -> float:
    """Waits for ``pred()``; how long it took (AssertionError after ``timeout``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not pred():
        if loop.time() - start > timeout:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(every)
    return loop.time() - start

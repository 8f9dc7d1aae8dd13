"""IMDSv2 client against the fake IMDS on loopback, and the fake's own strictness."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from bootstrap.sources.fake_imds import FakeImds
from bootstrap.sources.imds import TOKEN_HEADER, TTL_HEADER, ImdsSource, looks_like_ours
from bootstrap.sources.model import DiscoveryContext, LocalDiscoveryError, RemoteProtocolError

DOC = json.dumps({"nsg-bootstrap": 1, "bootstrap-servers": [{"uri": "https://bs.example.net:8443"}]}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _run(fake: FakeImds, body):
    url = await fake.start("127.0.0.1", 0)
    try:
        return await body(url)
    finally:
        await fake.close()


def discover(fake: FakeImds, ctx: DiscoveryContext | None = None):
    ctx = ctx or DiscoveryContext()

    async def body(url):
        return await ImdsSource(url).discover(ctx)

    return asyncio.run(_run(fake, body)), ctx


def test_user_data_names_the_servers_and_instance_id_lands_in_the_context():
    fake = FakeImds(user_data=DOC, instance_id="i-0abc123def4567890")
    got, ctx = discover(fake)
    assert [(s.uri, s.source) for s in got] == [("https://bs.example.net:8443", "imds")]
    assert ctx.instance_id == "i-0abc123def4567890"
    assert [m for m, _, _ in fake.log] == ["PUT", "GET", "GET"] and all(s == 200 for *_, s in fake.log)


@pytest.mark.parametrize("user_data", [None, b"#cloud-config\nruncmd: [true]\n", b'{"other": 1}', b"\xff"])
def test_user_data_that_is_not_ours_names_nothing(user_data):
    got, ctx = discover(FakeImds(user_data=user_data))
    assert got == [] and ctx.instance_id == "i-0123456789abcdef0"


def test_user_data_that_claims_to_be_ours_but_is_broken_is_an_error():
    bad = json.dumps({"nsg-bootstrap": 1, "bootstrap-servers": [{"uri": "http://x.example"}]}).encode()
    with pytest.raises(RemoteProtocolError, match="https scheme"):
        discover(FakeImds(user_data=bad))
    assert looks_like_ours(bad) and not looks_like_ours(b"[1]")


def test_bad_instance_id_is_the_services_fault():
    with pytest.raises(RemoteProtocolError, match="instance-id"):
        discover(FakeImds(user_data=DOC, instance_id="../../etc"))


def test_no_metadata_service_names_nothing():
    async def body(url):
        port = int(url.rsplit(":", 1)[1])
        await fake.close()  # now nobody listens on that port
        return await ImdsSource(f"http://127.0.0.1:{port}", timeout=1.0).discover(DiscoveryContext())

    fake = FakeImds(user_data=DOC)
    assert asyncio.run(_run(fake, body)) == []


def test_token_ttl_is_checked_locally():
    with pytest.raises(LocalDiscoveryError):
        ImdsSource("http://127.0.0.1:1", token_ttl=0)


def test_fake_enforces_imdsv2_sessions():
    clock = Clock()
    fake = FakeImds(user_data=DOC, clock=clock)

    async def body(url):
        out = {}
        async with aiohttp.ClientSession() as http:
            async def status(method, path, headers=None):
                async with http.request(method, url + path, headers=headers or {}) as r:
                    return r.status, await r.text()

            out["v1 get"] = (await status("GET", "/latest/user-data"))[0]
            out["put no ttl"] = (await status("PUT", "/latest/api/token"))[0]
            out["put ttl 0"] = (await status("PUT", "/latest/api/token", {TTL_HEADER: "0"}))[0]
            out["put ttl big"] = (await status("PUT", "/latest/api/token", {TTL_HEADER: "21601"}))[0]
            out["put ttl junk"] = (await status("PUT", "/latest/api/token", {TTL_HEADER: "x"}))[0]
            out["put via proxy"] = (await status("PUT", "/latest/api/token",
                                                 {TTL_HEADER: "60", "X-Forwarded-For": "192.0.2.1"}))[0]
            out["get token"], token = await status("PUT", "/latest/api/token", {TTL_HEADER: "60"})
            out["wrong token"] = (await status("GET", "/latest/user-data", {TOKEN_HEADER: token + "x"}))[0]
            out["good token"] = (await status("GET", "/latest/user-data", {TOKEN_HEADER: token}))[0]
            clock.now += 60
            out["expired token"] = (await status("GET", "/latest/user-data", {TOKEN_HEADER: token}))[0]
        return out

    assert asyncio.run(_run(fake, body)) == {
        "v1 get": 401, "put no ttl": 400, "put ttl 0": 400, "put ttl big": 400, "put ttl junk": 400,
        "put via proxy": 403, "get token": 200, "wrong token": 401, "good token": 200, "expired token": 401}


def test_client_reports_a_refused_token_with_the_http_status():
    class Refusing(FakeImds):
        async def _token(self, request):
            raise web.HTTPForbidden()

    with pytest.raises(RemoteProtocolError) as info:
        discover(Refusing(user_data=DOC))
    assert info.value.code == 403


def test_fake_refuses_the_real_metadata_address():
    with pytest.raises(ValueError):
        asyncio.run(FakeImds().start("169.254.169.254", 80))

"""The controller end to end on loopback: an operator registers a gateway; the box, knowing nothing
but its factory identity, bootstraps (SZTP, signed data checked through the voucher), enrolls (EST),
opens the mTLS channel and receives its config; the operator changes the enterprise and the new
generation arrives by itself."""

from __future__ import annotations

import asyncio

from bootstrap.driver import Bootstrapper, Server
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from controller.services import DeviceServices
from controller.store import Store
from nsg.channel import wire
from nsg.channel.client import ChannelClient
from nsg.model import parse_config
from tests.unit.bootstrap_flow.test_flow import STAGES


def uplink(n):
    return [{"name": "wan0", "interface": "wan0", "mode": "static", "address": f"198.18.{n}.2/24",
             "gateway": f"198.18.{n}.1"}]


def test_register_bootstrap_enroll_configure(tmp_path):
    store = Store(tmp_path / "ctl.db")
    store.enterprises.create("acme", transport="esp")
    store.enterprises.add_subnet("acme", "corp", vni=100, cidr="198.19.0.0/24", gateway="198.19.0.1")
    store.gateways.add("acme", "b1", serial="NSG-21", uplinks=uplink(1), ports={"corp": ["lan0"]}, behind_nat=False)
    store.gateways.add("acme", "b2", serial="NSG-22", uplinks=uplink(2), ports={"corp": ["lan0"]}, behind_nat=True)
    ident_dir = tmp_path / "gw" / "identity"
    factory_init(ident_dir, "NSG-21", make_manufacturer_ca(tmp_path / "mfg"))

    async def main():
        svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
        await svc.start()
        try:
            ident = FileIdentityStore(ident_dir)
            doc = await Bootstrapper(ident).run([Server(svc.base_url, source="dhcp")])
            assert ident.ldevid() is not None
            got: list[wire.Config] = []

            async def on_config(msg):
                parse_config(msg.config)  # what the daemon does first
                got.append(msg)
                return wire.ApplyResult(generation=msg.generation, ok=True, running=msg.generation)

            client = ChannelClient(doc.channel_url,
                                   lambda: ident.tls_context("ldevid", ident_dir / "controller-ca.pem"),
                                   ident.serial(), on_config, lambda: 0, backoff=(0.05, 0.2))
            task = asyncio.create_task(client.run())
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.02)
            first = parse_config(got[0].config)
            assert str(first.system_ip) == str(store.gateways.get("b1").system_ip)
            assert [p.name for p in first.peers] == ["b2"] and first.peers[0].initiate == "never"
            assert first.transport == "esp" and first.ipsec is not None and first.ipsec.auth == "ldevid"
            assert first.peers[0].serial == store.gateways.get("b2").serial and first.peers[0].psk is None
            # the LDevID the box just got is on record (it can be revoked)
            assert [c["serial"] for c in store.certificates.list(ident.serial())] == [
                f"{ident.ldevid().serial_number:x}"]
            # the operator adds a subnet: a new generation reaches the gateway unasked
            store.enterprises.add_subnet("acme", "guest", vni=200, cidr="198.19.1.0/24", gateway="198.19.1.1")
            for _ in range(200):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.02)
            assert got[1].generation > got[0].generation
            assert {s.name for s in parse_config(got[1].config).subnets} == {"corp", "guest"}
            results = svc.hub.sessions["NSG-21"].results
            for _ in range(100):
                if len(results) == 2:
                    break
                await asyncio.sleep(0.02)
            assert [r.ok for r in results] == [True, True]
            task.cancel()
        finally:
            await svc.stop()
        # first a signed redirect (we were untrusted), then onboarding over trusted TLS, with reports
        assert svc.sztp.counters["served"] == 2 and svc.gate.counters["granted"] == 1
        assert [p["type"] for p in svc.sztp.progress["NSG-21"]] == STAGES

    asyncio.run(main())
    store.close()


def test_ldevid_is_renewed_at_two_thirds_of_its_life(tmp_path):
    import datetime

    from bootstrap import est
    from bootstrap.renew import keep_enrolled

    store = Store(tmp_path / "ctl.db")
    store.enterprises.create("acme")
    store.gateways.add("acme", "b1", serial="NSG-21", uplinks=uplink(1), ports={}, behind_nat=False)
    ident_dir = tmp_path / "gw" / "identity"
    factory_init(ident_dir, "NSG-21", make_manufacturer_ca(tmp_path / "mfg"))

    async def main():
        svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
        await svc.start()
        try:
            ident = FileIdentityStore(ident_dir)
            doc = await Bootstrapper(ident).run([Server(svc.base_url)])
            first = ident.ldevid()
            naps = []

            async def nap(seconds):
                naps.append(seconds)
                await asyncio.sleep(0)

            # before 2/3 of its life: it only waits
            before = est.renew_at(first) - datetime.timedelta(days=1)
            task = asyncio.create_task(keep_enrolled(ident, doc.est_url, clock=lambda: before, sleep=nap))
            for _ in range(50):
                await asyncio.sleep(0.01)
            assert ident.ldevid() == first and naps and all(n == 3600.0 for n in naps)
            task.cancel()
            # past it: a new certificate with a new key, issued by the controller's CA
            after = est.renew_at(first) + datetime.timedelta(seconds=1)
            task = asyncio.create_task(keep_enrolled(ident, doc.est_url, clock=lambda: after, sleep=nap))
            for _ in range(200):
                if ident.ldevid() != first:
                    break
                await asyncio.sleep(0.02)
            task.cancel()
            renewed = ident.ldevid()
            assert renewed != first and renewed.public_key() != first.public_key()
            renewed.verify_directly_issued_by(svc.ca.cert)
        finally:
            await svc.stop()

    asyncio.run(main())
    store.close()


def test_images_go_only_to_gateways_whose_apps_run_them(tmp_path):
    """The device site's /images/SHA256: the LDevID holder whose config runs that image gets it (SHA-256
    checked on arrival); an IDevID, no certificate, or an image of no app of its own gets nothing."""
    import hashlib
    import io
    import json
    import ssl
    import tarfile

    import pytest

    from containers import image_fetch

    store = Store(tmp_path / "ctl.db")
    store.enterprises.create("acme")
    store.enterprises.add_subnet("acme", "corp", vni=100, cidr="198.19.0.0/24", gateway="198.19.0.1")
    store.gateways.add("acme", "b1", serial="NSG-31", uplinks=uplink(1), ports={"corp": ["lan0"]})
    ident_dir = tmp_path / "gw" / "identity"
    factory_init(ident_dir, "NSG-31", make_manufacturer_ca(tmp_path / "mfg"))

    def tarball(tag: str) -> bytes:
        buf = io.BytesIO()
        doc = json.dumps([{"Config": "c.json", "RepoTags": [tag], "Layers": []}]).encode()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size = len(doc)
            tar.addfile(info, io.BytesIO(doc))
        return buf.getvalue()

    async def main():
        svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
        await svc.start()
        try:
            ident = FileIdentityStore(ident_dir)
            await Bootstrapper(ident).run([Server(svc.base_url, source="dhcp")])
            shas = {}
            for tag in ("acme/web:1", "acme/other:1"):
                data = tarball(tag)
                shas[tag] = hashlib.sha256(data).hexdigest()
                (svc.images_dir / f"{shas[tag]}.tar").write_bytes(data)
                store.workloads.add_image("acme", shas[tag], len(data), [tag])
            store.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1")
            url = store.documents.config_for("b1").apps[0].image_source.url
            assert url == f"{svc.base_url}/images/{shas['acme/web:1']}"
            cafile = ident_dir / "controller-ca.pem"

            def fetch(what: str, tls, cache: str):
                return image_fetch.obtain(f"{svc.base_url}/images/{shas[what]}", shas[what], tmp_path / cache, tls)

            ldevid = lambda: ident.tls_context("ldevid", cafile)  # noqa: E731
            got = await asyncio.to_thread(fetch, "acme/web:1", ldevid, "c1")
            assert hashlib.sha256(got.read_bytes()).hexdigest() == shas["acme/web:1"]
            assert oct(got.stat().st_mode & 0o777) == "0o600"
            with pytest.raises(image_fetch.ImageError, match="403"):  # not an image of its apps
                await asyncio.to_thread(fetch, "acme/other:1", ldevid, "c2")
            with pytest.raises(image_fetch.ImageError, match="401"):  # the factory identity is not enough
                await asyncio.to_thread(fetch, "acme/web:1", lambda: ident.tls_context("idevid", cafile), "c3")
            bare = lambda: ssl.create_default_context(cafile=str(cafile))  # noqa: E731
            with pytest.raises(image_fetch.ImageError, match="401"):
                await asyncio.to_thread(fetch, "acme/web:1", bare, "c4")
            with pytest.raises(image_fetch.ImageError, match="certificate verify failed"):  # the server is checked
                await asyncio.to_thread(fetch, "acme/web:1", ssl.create_default_context, "c5")
            assert svc.counters == {"image_downloads": 1, "image_refused": 3, "bundle_downloads": 0,
                                    "bundle_refused": 0}
            # the channel, too, takes the LDevID and not the factory identity
            import aiohttp

            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(f"wss://127.0.0.1:{svc.port}/channel",
                                          ssl=ident.tls_context("idevid", cafile))
                assert refused.value.status == 403
                ws = await http.ws_connect(f"wss://127.0.0.1:{svc.port}/channel", ssl=ldevid())
                await ws.close()
            assert svc.hub.counters["refused"] == 1
            left = [p for c in ("c2", "c3", "c4", "c5") if (tmp_path / c).exists() for p in (tmp_path / c).iterdir()]
            assert left == []  # no partial download left behind
        finally:
            await svc.stop()

    asyncio.run(main())


def test_bundles_go_only_to_gateways_of_their_enterprise(tmp_path):
    """The device site's /bundles/SHA256, fetched as the gateway's upgrade agent does (nsg.upgrade.download
    with the LDevID context): its enterprise's bundle arrives with the size and hash the config gave; a
    bundle of another enterprise and one that does not exist are refused alike (403); the factory
    identity is not enough (401); a file that is not the one promised is not kept."""
    import hashlib

    import pytest

    from nsg.upgrade.download import download
    from nsg.upgrade.errors import DownloadError

    store = Store(tmp_path / "ctl.db")
    for ent, gw, serial, n in (("acme", "b1", "NSG-41", 1), ("beta", "g9", "NSG-49", 9)):
        store.enterprises.create(ent)
        store.gateways.add(ent, gw, serial=serial, uplinks=uplink(n))
    ident_dir = tmp_path / "gw" / "identity"
    factory_init(ident_dir, "NSG-41", make_manufacturer_ca(tmp_path / "mfg"))

    async def main():
        svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
        await svc.start()
        try:
            ident = FileIdentityStore(ident_dir)
            await Bootstrapper(ident).run([Server(svc.base_url, source="dhcp")])
            shas = {}
            for ent in ("acme", "beta"):
                data = f"bundle of {ent}".encode() * 1000
                shas[ent] = hashlib.sha256(data).hexdigest()
                (svc.bundles_dir / f"{shas[ent]}.nsgb").write_bytes(data)
                store.upgrades.add_bundle(ent, sha256=shas[ent], size=len(data), model="nsg-atom-x86_64",
                                          version="1.3.0", min_version="1.0.0")
            store.upgrades.set_profile("acme", "1.3.0")
            target = store.documents.config_for("b1").upgrade
            assert target.bundles[0].url == f"{svc.base_url}/bundles/{shas['acme']}"
            cafile = ident_dir / "controller-ca.pem"
            ldevid = ident.tls_context("ldevid", cafile)

            def fetch(sha: str, ctx, dest: str, **kw):
                return download(f"{svc.base_url}/bundles/{sha}", tmp_path / dest, context=ctx, **kw)

            b = target.bundles[0]
            got = await asyncio.to_thread(fetch, b.sha256, ldevid, "d1", expect_size=b.size,
                                          expect_sha256=b.sha256)
            assert hashlib.sha256(got.read_bytes()).hexdigest() == shas["acme"]
            for sha, ctx, says in ((shas["beta"], ldevid, "HTTP 403"), ("0" * 64, ldevid, "HTTP 403"),
                                   (shas["acme"], ident.tls_context("idevid", cafile), "HTTP 401")):
                with pytest.raises(DownloadError, match=says):
                    await asyncio.to_thread(fetch, sha, ctx, "d2")
            with pytest.raises(DownloadError, match="not the 12 expected") as err:
                await asyncio.to_thread(fetch, shas["acme"], ldevid, "d3", expect_size=12)
            assert err.value.code == "download-mismatch"
            with pytest.raises(DownloadError, match="SHA-256") as err:
                await asyncio.to_thread(fetch, shas["acme"], ldevid, "d4", expect_sha256="f" * 64)
            for d in ("d2", "d3", "d4"):  # nothing kept of what was refused or not what it should be
                assert not (tmp_path / d).exists() or not any((tmp_path / d).iterdir())
            assert svc.counters["bundle_downloads"] == 3 and svc.counters["bundle_refused"] == 3
        finally:
            await svc.stop()

    asyncio.run(main())
    store.close()

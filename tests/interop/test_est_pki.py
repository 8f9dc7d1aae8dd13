"""strongSwan's `pki` (Debian 12: strongswan-pki with the openssl plugin of libstrongswan-standard-plugins)
as an independent EST client (RFC 7030) of the controller's real device site (controller/services.py
DeviceServices) on 127.0.0.1.

    pki --estca   GET  /.well-known/est/cacerts        (4.1)   no client certificate
    pki --est     POST /.well-known/est/simplereenroll (4.2.2) the LDevID as TLS client certificate

pki can present a client certificate only when renewing (--cert/--key name "the old certificate"),
so the first enrollment is our own client's (bootstrap/est.py, with the IDevID), and pki renews.
pki reads only base64 without line breaks ("could not parse single CA certificate", "could not parse
pkcs7 signed-data container" otherwise): RFC 4648 section 4 base64 is what the server must send.
pki missing: a skip locally, a failure under CI=true (tests/peers.py require_peer), naming the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bootstrap import est
from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from controller.services import DeviceServices
from controller.store import Store
from tests.peers import require_peer

SERIAL = "NSG-EST-31"
PKI_TIMEOUT = 30.0
# What pki's EST commands load (strongSwan 5.9.8): its own TLS client (libtls, not the curl fetcher: both
# commands pass with a pki load list without curl) on the openssl plugin (ECDSA keys, ECDHE, AES-GCM; without
# it pki cannot even parse our CA certificate).
PKI_PLUGINS = {"openssl": "libstrongswan-standard-plugins", "x509": "libstrongswan", "pem": "libstrongswan",
               "pkcs7": "libstrongswan", "pkcs1": "libstrongswan", "pkcs8": "libstrongswan"}


def missing() -> list[str]:
    """One line per absent piece, naming the Debian package; the plugins are those `pki --help` says it
    loaded (a plugin file present but not loaded is as good as absent)."""
    path = shutil.which("pki")
    if path is None:
        return ["strongSwan pki command not found (Debian package strongswan-pki)"]
    try:
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=PKI_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"{path} --help failed: {exc}"]
    m = re.search(r"loaded plugins: (.*)", out.stdout + out.stderr)
    loaded = set(m[1].split()) if m else set()
    return [f"strongSwan pki plugin {name} not loaded by {path} (Debian package {pkg})"
            for name, pkg in PKI_PLUGINS.items() if name not in loaded]


pytestmark = [require_peer(missing())]


async def pki(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """Run pki; (exit status, stdout, stderr). Killed by pid if it hangs."""
    proc = await asyncio.create_subprocess_exec("pki", *args, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), PKI_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    return proc.returncode or 0, out, err.decode(errors="replace")


def uplink() -> list[dict]:
    return [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
             "gateway": "198.18.1.1"}]


@contextlib.asynccontextmanager
async def controller(tmp_path: Path):
    """The controller's device site with one registered gateway; its CA as a PEM file."""
    store = Store(tmp_path / "ctl.db")
    store.enterprises.create("acme", transport="esp")
    store.gateways.add("acme", "b1", serial=SERIAL, uplinks=uplink(), ports={})
    svc = DeviceServices(store, tmp_path / "ctl", "127.0.0.1", 0, tmp_path / "mfg")
    await svc.start()
    ca_file = tmp_path / "controller-ca.pem"
    ca_file.write_bytes(svc.ca.cert_pem)
    try:
        yield svc, ca_file
    finally:
        await svc.stop()
        store.close()


def test_pki_estca_gets_the_controller_ca(tmp_path):
    out_file = tmp_path / "estca.pem"

    async def main():
        async with controller(tmp_path) as (svc, ca_file):
            status, _, err = await pki("--estca", "--url", svc.base_url, "--cacert", str(ca_file),
                                       "--caout", str(out_file), "--outform", "pem")
            return svc.ca.cert, status, err

    ca, status, err = asyncio.run(main())
    assert status == 0, err
    assert x509.load_pem_x509_certificate(out_file.read_bytes()) == ca


def test_pki_est_renews_an_ldevid(tmp_path):
    ident_dir = tmp_path / "gw" / "identity"
    factory_init(ident_dir, SERIAL, make_manufacturer_ca(tmp_path / "mfg"))
    ident = FileIdentityStore(ident_dir)

    async def main():
        async with controller(tmp_path) as (svc, ca_file):
            # the first enrollment, with the IDevID (pki cannot present one): our client
            old_key = est.new_key()
            ldevid = await est.simple_enroll(svc.base_url, old_key, SERIAL, issuers=[svc.ca.cert],
                                             ssl_context=ident.tls_context("idevid", ca_file))
            ident.store_ldevid(ldevid, old_key)
            # the renewal: pki makes a new key and a request naming the same subject and SAN (4.2.2)
            status, new_key_pem, err = await pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
            assert status == 0, err
            (tmp_path / "new.key").write_bytes(new_key_pem)
            system_ip = str(svc.store.gateways.get("b1").system_ip)
            status, req, err = await pki("--req", "--in", str(tmp_path / "new.key"), "--type", "ecdsa",
                                         "--dn", f"serialNumber={SERIAL}, CN={SERIAL}", "--san", system_ip,
                                         "--outform", "der")
            assert status == 0, err
            status, out, err = await pki("--est", "--url", svc.base_url, "--cacert", str(ca_file),
                                         "--cert", str(ident_dir / "ldevid.pem"),
                                         "--key", str(ident_dir / "ldevid.key"),
                                         "--maxpolltime", "10", "--outform", "pem", stdin=req)
            return svc, ldevid, new_key_pem, status, out, err

    svc, ldevid, new_key_pem, status, out, err = asyncio.run(main())
    assert status == 0, err
    renewed = next(c for c in x509.load_pem_x509_certificates(out) if c.issuer == svc.ca.cert.subject)
    new_key = serialization.load_pem_private_key(new_key_pem, password=None)
    assert renewed.public_key() == new_key.public_key() != ldevid.public_key()
    assert renewed.subject == ldevid.subject and renewed.serial_number != ldevid.serial_number
    renewed.verify_directly_issued_by(svc.ca.cert)
    assert (renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            == ldevid.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    # on record, so it can be revoked
    with Store(tmp_path / "ctl.db") as store:
        assert {c["serial"] for c in store.certificates.list(SERIAL)} == {f"{ldevid.serial_number:x}",
                                                                    f"{renewed.serial_number:x}"}

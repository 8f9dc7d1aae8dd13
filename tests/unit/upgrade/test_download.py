"""https downloads: verified TLS only (a server the CA did not sign is refused), https only (also after
a redirect), the space check, and the downloaded bundle installed like a file. The server is on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nsg.upgrade.cli import main
from nsg.upgrade.download import download
from nsg.upgrade.errors import BoxError, DownloadError, RequestRefused
from nsg.upgrade.record import load_record


def _cert(subject: str, key, issuer_key, issuer_name: str, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key, srv_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test controller CA", ca_key, ca_key, "test controller CA", True)
    other = _cert("another CA", other_key, other_key, "another CA", True)
    srv = _cert("127.0.0.1", srv_key, ca_key, "test controller CA", False)
    for name, obj in (("ca.pem", ca), ("other-ca.pem", other), ("srv.pem", srv), ("srv.key", srv_key)):
        (d / name).write_bytes(_pem(obj))
    return {"ca": d / "ca.pem", "other": d / "other-ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


@pytest.fixture
def server(pki):
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            if self.path == "/to-http":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{port}/bundle")
                self.end_headers()
            elif self.path == "/to-https":
                self.send_response(302)
                self.send_header("Location", f"https://127.0.0.1:{port}/bundle")
                self.end_headers()
            elif self.path.lstrip("/") in files:
                data = files[self.path.lstrip("/")]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def test_download_with_the_controllers_ca(server, pki, tmp_path):
    url, files = server
    files["bundle"] = b"x" * 300_000
    path = download(f"{url}/bundle", tmp_path / "dl", cafile=pki["ca"])
    assert path.read_bytes() == files["bundle"] and path.stat().st_mode & 0o777 == 0o600
    assert download(f"{url}/to-https", tmp_path / "dl", cafile=pki["ca"]).read_bytes() == files["bundle"]


@pytest.mark.parametrize("ca", ["other", None])  # another CA; the system store (knows no test CA)
def test_a_server_the_ca_did_not_sign_is_refused(server, pki, tmp_path, ca):
    url, files = server
    files["bundle"] = b"x"
    with pytest.raises(DownloadError, match=r"127.0.0.1's TLS certificate does not verify against") as err:
        download(f"{url}/bundle", tmp_path / "dl", cafile=pki[ca] if ca else None)
    assert err.value.code == "tls" and err.value.fault == "server"
    assert not (tmp_path / "dl" / "bundle.download").exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1/bundle", "ftp://x/y", "https:///nohost"])
def test_only_https(tmp_path, url):
    with pytest.raises(RequestRefused, match=r"only https") as err:
        download(url, tmp_path)
    assert err.value.fault == "operator"


def test_a_redirect_to_http_is_refused(server, pki, tmp_path):
    url, files = server
    files["bundle"] = b"x"
    with pytest.raises(RequestRefused, match=r"redirects to http://.*only https"):
        download(f"{url}/to-http", tmp_path, cafile=pki["ca"])


def test_http_errors_and_size_limits(server, pki, tmp_path):
    url, files = server
    with pytest.raises(DownloadError, match=r"HTTP 404"):
        download(f"{url}/nothing", tmp_path, cafile=pki["ca"])
    files["bundle"] = b"x" * 5000
    with pytest.raises(DownloadError, match=r"is 5000 bytes; a bundle is at most 4096") as err:
        download(f"{url}/bundle", tmp_path, cafile=pki["ca"], max_bytes=4096)
    assert err.value.code == "too-big"
    with pytest.raises(BoxError, match=r"is 5000 bytes; .* to spare") as err:
        download(f"{url}/bundle", tmp_path, cafile=pki["ca"], reserve=1 << 62)
    assert err.value.code == "no-space"
    assert not (tmp_path / "bundle.download").exists()


def test_nsg_upgrade_from_a_url(server, pki, tbox, capsys):
    url, files = server
    files["b.nsgb"] = tbox.bundle(version="1.3.0").read_bytes()
    (tbox.box.state_dir / "identity").mkdir(parents=True)
    (tbox.box.state_dir / "identity" / "controller-ca.pem").write_bytes(pki["ca"].read_bytes())
    b = tbox.box
    paths = ["--state-dir", str(b.state_dir), "--grubenv", str(b.grubenv), "--keys-dir", str(b.keys_dir),
             "--release-file", str(b.release), "--partlabel-dir", str(b.partlabel_dir), "--cmdline", str(b.cmdline)]
    assert main(["upgrade", f"{url}/b.nsgb", "--no-reboot", *paths]) == 0
    assert "upgrade 1.2.0 -> 1.3.0: slot b" in capsys.readouterr().out
    assert tbox.env().get("nsg_try") == "b"
    assert not list((b.state_dir / "upgrade").iterdir())  # the download is removed once installed
    # a server the box does not trust: refused, counted
    assert main(["upgrade", f"{url}/b.nsgb", "--no-reboot", "--ca", str(pki["other"]), *paths]) == 1
    assert "[server: tls]" in capsys.readouterr().err
    assert load_record(b.record_path).refused == {"tls": 1}

"""Run a real strongSwan charon inside a network namespace, as an IKEv2/ESP peer for tests.

What charon needs on the machine (Debian 12 packages, all in deps/apt-packages.txt, which ``make setup``
installs; ``missing()`` names whichever is absent, and ``Charon.start`` refuses to start without it):

- ``strongswan-charon`` (charon at /usr/lib/ipsec/charon), ``libstrongswan`` (most plugins: random,
  nonce, aes, sha1/sha2, hmac, kdf, pem, pkcs1/pkcs8, x509, pubkey, constraints, kernel-netlink),
  ``strongswan-libcharon`` (socket-default, updown),
- ``libstrongswan-standard-plugins`` (openssl and gcm: without them charon still starts, but has no
  ECP DH group (ecp256) and no AES-GCM, so every negotiation fails or times out),
- ``strongswan-swanctl`` (the vici plugin; swanctl itself is only handy for debugging by hand),
- ``libcharon-extra-plugins`` (kernel-libipsec: ESP in userspace over a TUN device ``ipsec0``,
  needed because this kernel has no ESP/GCM; it must come before kernel-netlink in the load list),
- the ``vici`` Python package (in the test extras) to drive charon over its unix socket.

How it runs: charon hard-codes /run/charon.pid and refuses to start when another charon owns it, so
every instance gets a private /run. The command is

    ip netns exec NS unshare -m --propagation private -- \\
        sh -c 'mount --bind "$1" /run && shift && exec "$@"' sh WORKDIR/run /usr/lib/ipsec/charon

where each step ``exec``s the next, so the Popen pid *is* charon's pid and it is stopped by that pid.
strongswan.conf and swanctl.conf are written into the workdir (swanctl.conf is a faithful record:
``swanctl --load-all --file WORKDIR/swanctl.conf --uri unix://WORKDIR/charon.vici`` loads the same),
but connections and credentials are loaded over vici (load-conn, load-shared, load-cert, load-key).
Everything read back (list-sas) comes from vici messages, never from human-readable output.

Logging: a filelog at WORKDIR/charon.log. ``log_keys=True`` raises ``ike`` and ``chd`` to 4, the level
at which charon prints the IKE SA keys (``Sk_ei secret`` ...) and the CHILD_SA keys
(``encryption initiator key`` ...). Only for test peers with throwaway keys.

Certificates for pubkey tests come from ``tests/interop/certs.py`` (``make_ca``, ``issue_cert``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.interop.certs import key_type, write_private
from tests.interop.procs import stop_process

CHARON = "/usr/lib/ipsec/charon"
PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")
# kernel-libipsec before kernel-netlink: the first kernel interface that loads handles IPsec.
PLUGINS = ("random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "gcm", "kdf", "pem", "pkcs1", "pkcs8",
           "x509", "pubkey", "constraints", "kernel-libipsec", "kernel-netlink", "socket-default", "vici", "updown")
# The Debian 12 package of each plugin's libstrongswan-<name>.so; the others come with libstrongswan.
PLUGIN_PACKAGES = {"openssl": "libstrongswan-standard-plugins", "gcm": "libstrongswan-standard-plugins",
                   "kernel-libipsec": "libcharon-extra-plugins", "socket-default": "strongswan-libcharon",
                   "updown": "strongswan-libcharon", "vici": "strongswan-swanctl",
                   "curl": "libstrongswan-extra-plugins"}
TUN = Path("/dev/net/tun")
DEFAULT_LOG_LEVELS = {"default": 1}
KEY_LOG_LEVELS = {"ike": 4, "chd": 4}
IKE_PROPOSAL = "aes128gcm16-prfsha256-ecp256"
ESP_PROPOSAL = "aes128gcm16-ecp256"
_SUN_PATH_MAX = 107


class CharonError(RuntimeError):
    """charon did not start, refused a command, or did not reach the awaited state."""


def plugin_package(plugin: str) -> str:
    return PLUGIN_PACKAGES.get(plugin, "libstrongswan")


def missing(plugins: Sequence[str] = PLUGINS) -> list[str]:
    """What charon with ``plugins`` lacks here: one line per absent file, with the Debian package to install."""
    out = []
    if not os.access(CHARON, os.X_OK):
        out.append(f"strongSwan charon {CHARON} missing (Debian package strongswan-charon)")
    for plugin in plugins:
        so = PLUGIN_DIR / f"libstrongswan-{plugin}.so"
        if not so.exists():
            out.append(f"strongSwan plugin {plugin}: {so} missing (Debian package {plugin_package(plugin)})")
    if "kernel-libipsec" in plugins and not TUN.exists():
        out.append(f"{TUN} missing (kernel-libipsec needs the TUN device: modprobe tun)")
    return out


def available(plugins: Sequence[str] = PLUGINS) -> bool:
    return not missing(plugins)


# ---------------------------------------------------------------------------------------------
# Connection descriptions (rendered both to swanctl.conf text and to vici load-conn messages)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Child:
    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    esp_proposals: tuple[str, ...] = (ESP_PROPOSAL,)
    mode: str = "tunnel"
    rekey_time: str | None = None
    life_time: str | None = None
    start_action: str = "none"
    dpd_action: str | None = None

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"local_ts": list(self.local_ts), "remote_ts": list(self.remote_ts),
                               "esp_proposals": list(self.esp_proposals), "mode": self.mode,
                               "start_action": self.start_action}
        for key in ("rekey_time", "life_time", "dpd_action"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Connection:
    """One IKE_SA config. ``auth`` is "psk" (needs ``psk``) or "pubkey" (needs ``cert``, ``key``, ``cacerts``).

    ``local_addrs`` empty means "the Charon's own IKE address".
    """

    name: str
    remote_addrs: tuple[str, ...]
    local_id: str
    remote_id: str
    children: tuple[Child, ...]
    local_addrs: tuple[str, ...] = ()
    auth: str = "psk"
    psk: str | None = None
    cert: Path | None = None
    key: Path | None = None
    cacerts: tuple[Path, ...] = ()
    proposals: tuple[str, ...] = (IKE_PROPOSAL,)
    version: int = 2
    encap: bool = True
    mobike: bool = False
    rekey_time: str | None = None
    over_time: str | None = None
    dpd_delay: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.auth == "psk" and not self.psk:
            raise ValueError(f"connection {self.name}: auth=psk needs psk")
        if self.auth == "pubkey" and not (self.cert and self.key):
            raise ValueError(f"connection {self.name}: auth=pubkey needs cert and key")
        if self.auth not in ("psk", "pubkey"):
            raise ValueError(f"connection {self.name}: auth must be psk or pubkey, not {self.auth!r}")

    def config(self, default_local: str, *, inline_files: bool) -> dict[str, Any]:
        """The connection as swanctl.conf/vici structure; certs as PEM bytes (vici) or paths (file)."""
        def cert_value(p: Path) -> Any:
            return [p.read_bytes()] if inline_files else str(p)

        local: dict[str, Any] = {"auth": self.auth, "id": self.local_id}
        remote: dict[str, Any] = {"auth": self.auth, "id": self.remote_id}
        if self.auth == "pubkey":
            assert self.cert is not None
            local["certs"] = cert_value(self.cert)
        conn: dict[str, Any] = {
            "version": str(self.version),
            "local_addrs": list(self.local_addrs or (default_local,)),
            "remote_addrs": list(self.remote_addrs),
            "proposals": list(self.proposals),
            "encap": "yes" if self.encap else "no",
            "mobike": "yes" if self.mobike else "no",
            "local": local, "remote": remote,
            "children": {c.name: c.options() for c in self.children},
        }
        for key in ("rekey_time", "over_time", "dpd_delay"):
            if getattr(self, key) is not None:
                conn[key] = getattr(self, key)
        conn.update(self.extra)
        return conn


def _render(section: Mapping[str, Any], indent: int = 0) -> list[str]:
    """swanctl.conf / strongswan.conf syntax: ``key = value`` and ``name { ... }``; lists comma-joined."""
    pad = "    " * indent
    lines: list[str] = []
    for key, value in section.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.extend(_render(value, indent + 1))
            lines.append(f"{pad}}}")
        else:
            items = value if isinstance(value, list | tuple) else [value]
            text = ", ".join(_quote(str(v)) for v in items)
            lines.append(f"{pad}{key} = {text}")
    return lines


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_.:/%@" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode(value: Any) -> Any:
    """vici answers with bytes everywhere; turn them into str (lists and sections recursively)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------

class Charon:
    """One charon in namespace ``netns``; files under ``workdir``; ``address`` is its IKE address."""

    def __init__(self, netns: str, workdir: Path, address: str, name: str = "charon", *,
                 log_keys: bool = False, log_levels: Mapping[str, int] | None = None,
                 plugins: Sequence[str] = PLUGINS, settings: Mapping[str, Any] | None = None,
                 start_timeout: float = 10.0) -> None:
        self.netns = netns
        self.workdir = Path(workdir).absolute()
        self.address = address
        self.name = name
        self.log_levels = {**DEFAULT_LOG_LEVELS, **(KEY_LOG_LEVELS if log_keys else {}), **(log_levels or {})}
        self.plugins = tuple(plugins)
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self.connections: list[Connection] = []
        self.proc: subprocess.Popen | None = None
        self.conf_path = self.workdir / "strongswan.conf"
        self.swanctl_path = self.workdir / "swanctl.conf"
        self.log_path = self.workdir / "charon.log"
        self.out_path = self.workdir / "charon.out"
        self.run_dir = self.workdir / "run"
        self.vici_path = self.workdir / "charon.vici"
        if len(str(self.vici_path)) > _SUN_PATH_MAX:
            raise ValueError(f"vici socket path too long for a unix socket: {self.vici_path}")

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def add(self, conn: Connection) -> None:
        """Remember a connection (written to swanctl.conf); loaded at start, or now if running."""
        self.connections.append(conn)
        self._write_swanctl_conf()
        if self.running():
            self.load(conn)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Charon:
        if self.proc is not None:
            raise CharonError(f"{self.name}: already started")
        absent = missing(self.plugins)
        if absent:  # charon would start anyway and fail each negotiation: say what is missing instead
            raise CharonError(f"{self.name}: cannot run charon here: " + "; ".join(absent))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        self.conf_path.write_text(self.strongswan_conf())
        self._write_swanctl_conf()
        argv = ["ip", "netns", "exec", self.netns,
                "unshare", "-m", "--propagation", "private", "--",
                "sh", "-c", 'mount --bind "$1" /run && shift && exec "$@"', "sh", str(self.run_dir), CHARON]
        env = {**os.environ, "STRONGSWAN_CONF": str(self.conf_path)}
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        try:
            self._wait_for_vici()
            for conn in self.connections:
                self.load(conn)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM charon by pid, SIGKILL if it lingers; returns its exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return stop_process(proc, timeout=timeout)

    def __enter__(self) -> Charon:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_for_vici(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise CharonError(f"{self.name}: charon exited early ({self.proc and self.proc.returncode})\n"
                                  + self.log_tail())
            if self.vici_path.exists():
                try:
                    self.call("version")
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise CharonError(f"{self.name}: no vici socket at {self.vici_path} after {self.start_timeout}s\n"
                          + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.out_path, self.log_path):
            if path.exists():
                text += f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    # -- configuration files ---------------------------------------------------------------------

    def strongswan_conf(self) -> str:
        charon: dict[str, Any] = {
            "load": " ".join(self.plugins),
            "port": 500,
            "port_nat_t": 4500,
            "install_routes": "yes",
            "install_virtual_ip": "no",
            "retransmit_timeout": "1.0",
            "retransmit_tries": 3,
            "filelog": {"harness": {"path": str(self.log_path), "time_format": "%T", "ike_name": "yes",
                                    "append": "no", "flush_line": "yes",
                                    **{k: str(v) for k, v in self.log_levels.items()}}},
            "plugins": {"vici": {"socket": f"unix://{self.vici_path}"}, "kernel-libipsec": {"load": "yes"}},
        }
        charon.update(self.settings)
        # "load" is one space separated string, not a list
        lines = _render({"charon": charon})
        return "# written by tests/interop/strongswan.py\n" + "\n".join(lines) + "\n"

    def _write_swanctl_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conns = {c.name: c.config(self.address, inline_files=False) for c in self.connections}
        secrets: dict[str, Any] = {}
        authorities: dict[str, Any] = {}
        for n, c in enumerate(self.connections):
            if c.auth == "psk":
                secrets[f"ike-{n}"] = {"id-1": c.local_id, "id-2": c.remote_id, "secret": c.psk}
            else:
                # swanctl reads unencrypted private keys only from its key folders next to the file
                # (secrets.<type> just holds passphrases), so put a copy there.
                assert c.key is not None
                kind = key_type(c.key)
                write_private(self.workdir / ("private" if kind == "any" else kind) / c.key.name,
                               c.key.read_bytes())
                for m, ca in enumerate(c.cacerts):
                    authorities[f"ca-{n}-{m}"] = {"cacert": str(ca)}
        doc = {"connections": conns, "secrets": secrets, "authorities": authorities}
        self.swanctl_path.write_text("# written by tests/interop/strongswan.py\n" + "\n".join(_render(doc)) + "\n")
        self.swanctl_path.chmod(0o600)

    # -- vici ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, timeout: float = 15.0) -> Iterator[Any]:
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.vici_path))
            yield vici.Session(sock)
        finally:
            sock.close()

    def call(self, command: str, message: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One plain vici request; a refusal raises CharonError with charon's errmsg."""
        import vici.exception

        with self.session() as s:
            try:
                return _decode(s.request(command, dict(message) if message is not None else None))
            except vici.exception.CommandException as e:
                raise CharonError(f"{self.name}: vici {command} failed: {e}") from e

    def _streamed(self, method: str, message: Mapping[str, Any]) -> list[str]:
        import vici.exception

        logs: list[str] = []
        with self.session() as s:
            try:
                for event in getattr(s, method)(dict(message)):
                    logs.append(_decode(event).get("msg", ""))
            except vici.exception.CommandException as e:
                raise CharonError(f"{self.name}: vici {method} failed: {e}\n" + "\n".join(logs)) from e
        return logs

    def load(self, conn: Connection) -> None:
        if conn.auth == "psk":
            self.call("load-shared", {"type": "IKE", "data": conn.psk, "owners": [conn.local_id, conn.remote_id]})
        else:
            assert conn.key is not None
            self.call("load-key", {"type": key_type(conn.key), "data": conn.key.read_bytes()})
            for ca in conn.cacerts:
                self.call("load-cert", {"type": "X509", "flag": "CA", "data": ca.read_bytes()})
        self.call("load-conn", {conn.name: conn.config(self.address, inline_files=True)})

    def initiate(self, child: str, ike: str | None = None, timeout: float = 10.0) -> list[str]:
        msg: dict[str, Any] = {"child": child, "timeout": str(int(timeout * 1000)), "init-limits": "no"}
        if ike:
            msg["ike"] = ike
        return self._streamed("initiate", msg)

    def terminate(self, ike: str | None = None, child: str | None = None, timeout: float = 5.0) -> list[str]:
        msg: dict[str, Any] = {"timeout": str(int(timeout * 1000))}
        if ike:
            msg["ike"] = ike
        if child:
            msg["child"] = child
        return self._streamed("terminate", msg)

    def rekey_child(self, child: str) -> int:
        return int(self.call("rekey", {"child": child}).get("matches", 0))

    def rekey_ike(self, ike: str, reauth: bool = False) -> int:
        return int(self.call("rekey", {"ike": ike, "reauth": "yes" if reauth else "no"}).get("matches", 0))

    def list_sas(self, ike: str | None = None) -> list[dict[str, Any]]:
        """IKE SAs as dicts (vici list-sa fields, str values) with their config name under "name"."""
        sas: list[dict[str, Any]] = []
        with self.session() as s:
            for event in s.list_sas({"ike": ike} if ike else {}):
                for name, sa in _decode(event).items():
                    sas.append({"name": name, **sa})
        return sas

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 10.0,
                 what: str = "condition") -> Any:
        """Poll list-sas until ``predicate(sas)`` is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        sas: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            sas = self.list_sas()
            result = predicate(sas)
            if result:
                return result
            time.sleep(0.05)
        raise CharonError(f"{self.name}: timed out waiting for {what}; SAs now: {sas}\n" + self.log_tail())

    def wait_established(self, ike: str, child: str, timeout: float = 10.0) -> tuple[dict, dict]:
        """Wait for exactly one ESTABLISHED IKE SA ``ike`` with exactly one INSTALLED CHILD SA ``child``."""
        return self.wait_for(lambda sas: established(sas, ike, child), timeout, f"{ike}/{child} established")


def children(sa: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(sa.get("child-sas", {}).values())


# A rekeyed CHILD_SA lingers (charon's delete_rekeyed_delay, 5 s by default) in one of these states.
_CHILD_LEFTOVER = frozenset({"REKEYED", "DELETING", "DELETED", "DESTROYING"})


def established(sas: list[dict[str, Any]], ike: str, child: str) -> tuple[dict, dict] | None:
    """(ike_sa, child_sa) once settled: one ESTABLISHED IKE SA, exactly one INSTALLED child and
    nothing half-done (no rekey in flight); rekeyed children that merely await deletion are ignored."""
    ikes = [s for s in sas if s["name"] == ike]
    if len(ikes) != 1 or ikes[0].get("state") != "ESTABLISHED":
        return None
    live = [k for k in children(ikes[0]) if k.get("state") not in _CHILD_LEFTOVER]
    if len(live) != 1 or live[0].get("name") != child or live[0].get("state") != "INSTALLED":
        return None
    return ikes[0], live[0]


# ---------------------------------------------------------------------------------------------
# Two namespaces joined by a veth: the usual stage for a strongSwan pair
# ---------------------------------------------------------------------------------------------

_LAB_NETS = [ipaddress.ip_network(n) for n in ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


@dataclass(frozen=True)
class PeerNet:
    """Namespaces ``ns[0]``/``ns[1]``, veth ``ifname[i]`` with ``ike[i]``/24, ``inner[i]``/32 on lo."""

    prefix: str
    ns: tuple[str, str]
    ifname: tuple[str, str]
    ike: tuple[str, str]
    inner: tuple[str, str]

    def exec(self, side: int, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns[side], *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def ping(self, side: int, count: int = 1, interval: float = 0.2, wait: float = 2.0) -> subprocess.CompletedProcess:
        """Ping the other side's inner address from this side's inner address (through the tunnel)."""
        return self.exec(side, "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait),
                         "-I", self.inner[side], self.inner[1 - side])


@contextlib.contextmanager
def two_peers(prefix: str | None = None, ike: tuple[str, str] = ("198.18.50.1", "198.18.50.2"),
              inner: tuple[str, str] = ("198.19.250.1", "198.19.250.2")) -> Iterator[PeerNet]:
    """Make the pair, yield it, and always remove it together with anything still running inside."""
    import secrets

    from lab import netns

    for a in (*ike, *inner):
        if not any(ipaddress.ip_address(a) in n for n in _LAB_NETS):
            raise ValueError(f"{a} is outside the lab ranges")
    prefix = prefix or f"sw{secrets.token_hex(3)}-"
    net = PeerNet(prefix, (prefix + "a", prefix + "b"), ("ike-a", "ike-b"), ike, inner)
    made: list[str] = []
    try:
        for ns in net.ns:
            netns.add_namespace(ns)
            made.append(ns)
        netns.add_veth(net.ns[0], net.ifname[0], net.ns[1], net.ifname[1], alias=prefix + "ike")
        for i in (0, 1):
            netns.add_address(net.ns[i], net.ifname[i], f"{ike[i]}/24")
            netns.add_address(net.ns[i], "lo", f"{inner[i]}/32")
        yield net
    finally:
        for ns in made:
            # only processes this harness (or the test using it) started live in these namespaces
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)

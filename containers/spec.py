"""What an app is, as the reconciler and the backends see it. Pure, frozen values.

The gateway's typed config (nsg.model) is validated at the edge; nsg maps each app to an AppSpec.
An app runs as one container with no network of its own (`network_mode="none"`); nsg gives it one
interface, `eth0`, the far end of a veth pair whose near end is a port of the tenant subnet's bridge.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

LABEL_APP = "nsg.app"  # on every container nsg owns: the app's name; containers without it are never touched
LABEL_SPEC = "nsg.spec"  # the spec's digest: a container whose digest differs is replaced
CONTAINER_PREFIX = "nsg-"

Restart = Literal["no", "always", "on-failure", "unless-stopped"]


@dataclass(frozen=True)
class AppSpec:
    name: str  # unique per gateway; also names the container (nsg-<name>) and the host veth
    image: str  # a reference already loaded into the engine, e.g. "acme/web:1.2"
    bridge: str  # the tenant subnet's bridge, e.g. "br-100"
    address: str  # "198.19.0.50/24"
    gateway: str | None = None  # the subnet's gateway (default route), if any
    mtu: int = 1500
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    restart: Restart = "always"
    image_url: str | None = None  # a `docker save` tarball to load first (file:///...)
    image_sha256: str | None = None  # ... whose bytes must hash to this
    labels: tuple[tuple[str, str], ...] = field(default=())

    def digest(self) -> str:
        """Stable over the fields that need a new container when they change. The network settings
        are not among them: a new address is a re-attach, not a new container."""
        doc = {k: v for k, v in asdict(self).items() if k not in ("bridge", "address", "gateway", "mtu")}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def container_name(self) -> str:
        return CONTAINER_PREFIX + self.name

    @property
    def mac(self) -> str:
        """eth0's MAC, derived from the app's name and address (locally administered): the same after
        every re-attach, so neighbours' ARP caches and the EVPN MAC route stay right; unique per address."""
        h = hashlib.sha256(f"{self.name}|{self.address}".encode()).digest()
        return "02:" + ":".join(f"{b:02x}" for b in h[:5])

    @property
    def host_ifname(self) -> str:
        """The veth end on the bridge: 'a-' + 12 hex of the name's hash (interface names are short)."""
        return "a-" + hashlib.sha256(self.name.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Attachment:
    """How a running container is wired, as the attach adapter reads it back."""

    bridge: str | None
    address: str | None
    gateway: str | None
    mtu: int | None


@dataclass(frozen=True)
class Running:
    """A container nsg owns, as the engine reports it."""

    name: str  # the app's name (from the label)
    container_id: str
    digest: str  # from the label
    state: str  # docker's: created, running, restarting, exited, dead, paused
    pid: int  # 0 unless running
    restarts: int = 0
    oom_killed: bool = False
    attachment: Attachment | None = None  # None: not attached (or not running)

"""Typed status of the gateway's subsystems, as `nsg status --json` shows it.

Each subsystem returns one of these models from its ``status()``; the daemon puts them together
into the status document (GatewayStatus, nsg/status_doc.py) and the CLI reads the document back
into the same models (nsg/status.py; unknown fields from a newer daemon are ignored, so an older CLI
still renders what it knows, and fields an older daemon did not send take their defaults).

``model_dump(mode="json")`` of a model is the JSON the socket sends: the keys and their order are
the document's. A part whose keys depend on what it knows (an app not seen running yet has no
restart count, an SA of the kernel's has no packet counters) is a SparseStatus: the fields it was
not given are left out of the document, not sent as null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from nsg.model.upgrade import UpgradeState


class Status(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SparseStatus(Status):
    """Only the fields given (at construction, or present in the document read back) are dumped."""

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        given = self.model_fields_set
        return {k: v for k, v in handler(self).items() if k in given}


class PacketCount(Status):
    """An nftables counter."""

    packets: int = 0
    bytes: int = 0


# --- EVPN (nsg/evpn/control.py) ---------------------------------------------------------------


class BgpPeerStatus(Status):
    """One BGP session (bgp/fsm.py's counters, with its state)."""

    state: str
    opens: int = 0
    updates: int = 0
    keepalives: int = 0
    notifications_in: int = 0
    notifications_out: int = 0
    flaps: int = 0


class EvpnRouteCounts(Status):
    mac: int = 0      # type-2 paths received
    imet: int = 0     # type-3 (flood list) paths received
    prefix: int = 0   # type-5 paths received
    local: int = 0    # type-2 routes this gateway announces


class EvpnStatus(Status):
    """``frozen_macs``: MACs frozen by duplicate-MAC detection (RFC 7432 15.1), each {"vni", "mac",
    "at" (the VTEP it is held at, or "local"), "sites", "moves", "remaining_s"}; ``alerts``: the
    latest alerts, oldest first, each {"kind", "ts" (Unix time), and the alert's own fields}."""

    peers: dict[str, BgpPeerStatus] = {}
    routes: EvpnRouteCounts = EvpnRouteCounts()
    counters: dict[str, int] = {}
    frozen_macs: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []


# --- tunnels (nsg/tunnels.py; the IKE peerings of ipsec/ike/manager.py and sa.py) --------------


class IkeChildStatus(Status):
    """A child SA of an IKE SA (RFC 7296 1.3), its SPIs as 0x%08x."""

    id: int
    in_spi: str
    out_spi: str
    active: bool = True
    deleting: bool = False


class IkeSaStatus(Status):
    """ipsec.ike.sa.IkeSa.describe(): "established" also while rekeying or retiring."""

    state: str
    local_spi: str = ""
    remote_spi: str = ""
    initiator: bool = False
    peer: str = ""  # address:port
    remote_id: str = ""
    nat_local: bool = False
    nat_remote: bool = False
    children: list[IkeChildStatus] = []
    counters: dict[str, int] = {}
    closed_reason: str | None = None

    @property
    def up(self) -> bool:
        """Established with at least one child SA: traffic can flow."""
        return self.state == "established" and bool(self.children)


class IkePeerStatus(Status):
    """One peering of ipsec.ike.manager.IkeManager.status()."""

    peer: str
    initiate: bool = False
    failures: int = 0
    last_error: str | None = None
    ike_sa: IkeSaStatus | None = None

    @property
    def up(self) -> bool:
        return self.ike_sa is not None and self.ike_sa.up


class ChildSaStatus(SparseStatus):
    """An SA of the ESP engine: the userspace SAD's (with counters; outbound ones with the peer's
    endpoint) or the kernel's (XFRM: with the peering it belongs to, and the counters the kernel keeps
    per state: packets, bytes, replay drops, ICV failures)."""

    dir: str
    spi: str
    endpoint: str | None = None  # userspace, outbound
    peer: str | None = None  # xfrm
    # ipsec.esp.SaCounters, in its order (XFRM: packets, bytes, replay_drops, auth_failures)
    auth_failures: int | None = None
    bytes: int | None = None
    decrypt_errors: int | None = None
    dummy: int | None = None
    packets: int | None = None
    replay_drops: int | None = None
    truncated: int | None = None


class TunnelsStatus(SparseStatus):
    """The ESP engine and IKE. Before the engine runs only ``backend`` (None) is sent."""

    backend: str | None = None  # "userspace" or "xfrm"
    kernel_esp: bool = False
    engine: dict[str, int] = {}
    ike: list[IkePeerStatus] = []
    child_sas: list[ChildSaStatus] = []
    ike_driver: dict[str, int] = {}
    ike_manager: dict[str, int] = {}
    lifetime_expiries: dict[str, int] = {}


# --- management channel (nsg/channel/client.py) and bootstrap (nsg/zerotouch.py) -------------


class ChannelStatus(Status):
    url: str
    connected: bool = False
    since: float | None = None  # connected since (time.time())
    last_error: str | None = None
    connects: int = 0
    failures: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bad_frames: int = 0
    configs: int = 0


class DiscoveryStatus(Status):
    """Per discovery source ("file", "dhcp", "dns", ...: bootstrap.sources.DiscoveryStats)."""

    attempts: dict[str, int] = {}
    failures: dict[str, int] = {}
    last_error: dict[str, str] = {}


class BootstrapStatus(Status):
    state: str
    attempts: int = 0
    last_error: str | None = None
    discovery: DiscoveryStatus = DiscoveryStatus()


# --- enforcement (nsg/policy/enforce.py) -------------------------------------------------------


class GuardStatus(Status):
    """The box's input guard: its apply counters, what it lets in, what it dropped (nft counters)."""

    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    overlay_protected: bool = False
    uplinks: list[str] = []
    overlay_peers: list[str] = []
    services: list[str] = []  # "tcp/8443"
    dropped: dict[str, PacketCount] = {}  # "guard.uplink", "guard.overlay"


class PortStatus(Status):
    """One port of the LAN port guard: a LAN (or workload) port holds ``macs`` of at most ``max_macs``;
    a VXLAN port (the overlay) has no MACs; a bridge ("bridge") counts its stray ports' frames.
    ``dropped`` by reason: full, rate (LAN), spoof, gateway_arp (overlay), stray (bridge)."""

    kind: str = "lan"
    macs: int | None = None
    max_macs: int | None = None
    dropped: dict[str, PacketCount] = {}


class PortGuardStatus(Status):
    """Table bridge nsg_port (nsg/policy/port_guard.py): per-port MAC limits and the overlay frame guard."""

    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    bridges_missing: list[str] = []
    bridges_closed: list[str] = []  # bridges that drop frames from ports the table does not name
    ports: dict[str, PortStatus] = {}


class SecurityAlert(Status):
    """Something the gateway noticed that an operator should hear of (nsg/alerts.py)."""

    ts: float
    reason: str  # "duplicate-mac", "route-limit", "port-security"
    message: str
    fields: dict[str, Any] = {}


class AlertsStatus(Status):
    counts: dict[str, int] = {}  # by reason, since the daemon started
    last: list[SecurityAlert] = []  # the newest last
    unsent: int = 0  # waiting for the channel
    dropped: int = 0  # never sent (the queue is bounded)


class PolicyStatus(Status):
    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    counters: dict[str, PacketCount] = {}  # by rule comment


class TcClassCounters(Status):
    bytes: int = 0
    packets: int = 0
    drops: int = 0
    overlimits: int = 0


class QosStatus(Status):
    applied: int = 0
    noop: int = 0
    errors: int = 0
    last_error: str | None = None
    shaped: list[str] = []
    waiting: list[str] = []
    classes: dict[str, dict[str, TcClassCounters]] = {}  # device -> forwarding class -> counters


# --- commit-confirm (nsg/confirm.py) -----------------------------------------------------------


class TrialStatus(Status):
    generation: int
    fallback: int
    seconds_left: float


class RollbackStatus(Status):
    generation: int
    restored: int
    reason: str
    at: float


class CommitConfirmStatus(Status):
    pending: TrialStatus | None = None
    last_rollback: RollbackStatus | None = None
    trials: int = 0
    confirmed: int = 0
    rolled_back: int = 0
    refused_again: int = 0


# --- workloads (nsg/app_supervisor.py, nsg/vms.py) ---------------------------------------------


class AppStatus(SparseStatus):
    """One app; what the last pass saw of it (nothing yet: state "absent" only)."""

    name: str
    image: str = ""
    address: str | None = None
    bridge: str = ""
    state: str = "absent"
    restarts: int | None = None
    oom_killed: bool | None = None
    attached: bool | None = None
    memory_mb: float | None = None
    cpu_percent: float | None = None
    error: str | None = None

    def reported(self) -> tuple:
        """What is reported to the controller at once when it changes."""
        return self.state, self.attached, self.restarts, self.oom_killed, self.error


class AppsStatus(Status):
    apps: list[AppStatus] = []
    engine_error: str | None = None
    counters: dict[str, int] = {}
    last_pass: float | None = None


class VmStatus(SparseStatus):
    name: str
    address: str = ""
    bridge: str = ""
    tap: str = ""
    mac: str = ""
    kernel: str = ""
    accel: str = ""
    state: str = "absent"
    pid: int | None = None
    restarts: int | None = None
    attached: bool | None = None
    since: float | None = None
    error: str | None = None

    def reported(self) -> tuple:
        return self.state, self.attached, self.restarts, None, self.error


class VmsStatus(Status):
    vms: list[VmStatus] = []
    counters: dict[str, int] = {}
    last_pass: float | None = None


class WorkloadsStatus(Status):
    apps: AppsStatus | None = None
    vms: VmsStatus | None = None


# --- the daemon's own parts (nsg/daemon.py, nsg/status_doc.py) ---------------------------------


class LastApply(Status):
    """The last compose + engine pass: the dataplane's operations (at most 100 listed, all counted),
    what waits, which subsystem failed and which were rolled back or skipped ("no changes")."""

    generation: int
    reason: str
    changes: list[str] = []
    waiting: list[str] = []
    error: str | None = None
    rolled_back: bool = False
    duration_ms: float = 0.0
    at: float = 0.0
    changes_made: int = 0
    failed: str | None = None
    subsystems: dict[str, int] = {}
    skipped: list[str] = []
    rolled_back_subsystems: list[str] = []


class ConfigSummary(Status):
    path: str
    generation: int  # the daemon's (the controller's, for configs from it)
    config_generation: int  # the one written in the config
    system_ip: str
    transport: str


class UplinkStatus(Status):
    name: str
    interface: str
    mode: str
    address: str = ""  # static, else the lease's ("" without one)
    gateway: str = ""


class SubnetStatus(Status):
    name: str
    vni: int
    cidr: str
    gateway: str
    bridge: str
    vxlan: str
    ports: list[str] = []


class PeerStatus(Status):
    name: str
    system_ip: str
    endpoint: str


class DeviceStatus(Status):
    """A link nsg owns, or a LAN port the config names (as the kernel has it)."""

    name: str
    kind: str | None = None
    mtu: int = 0
    up: bool = False
    master: str | None = None
    vni: int | None = None
    owned: bool = False


# keys of a box with no config yet (still bootstrapping, or waiting for the controller), in order
BOOTING_KEYS = ("version", "pid", "config", "last_apply", "channel", "counters", "last_reload_error", "bootstrap",
                "upgrade")


class GatewayStatus(Status):
    """The whole document (`nsg status --json`). Without a config only BOOTING_KEYS are sent."""

    version: str
    pid: int
    uptime_s: float | None = None
    config: ConfigSummary | None = None
    uplinks: list[UplinkStatus] = []
    subnets: list[SubnetStatus] = []
    peers: list[PeerStatus] = []
    devices: list[DeviceStatus] = []
    fdb: list[str] = []  # "vx-100 02:..:07 dst 198.19.255.2" (the kernel's, as `bridge fdb` says it)
    neighbors: list[str] = []  # "br-100 198.19.0.7 lladdr 02:..:07"
    tunnels: TunnelsStatus | None = None
    channel: ChannelStatus | None = None
    bootstrap: BootstrapStatus | None = None
    evpn: EvpnStatus | None = None
    apps: AppsStatus | None = None
    vms: VmsStatus | None = None
    guard: GuardStatus | None = None
    port_guard: PortGuardStatus | None = None
    alerts: AlertsStatus | None = None
    policy: PolicyStatus | None = None
    qos: QosStatus | None = None
    last_apply: LastApply | None = None
    commit_confirm: CommitConfirmStatus | None = None
    upgrade: UpgradeState | None = None  # the A/B slots and the controller's target (nsg/upgrade/agent.py)
    last_reload_error: str | None = None
    counters: dict[str, int] = {}

    @model_serializer(mode="wrap")
    def _booting_short(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if self.config is None:
            return {k: out[k] for k in BOOTING_KEYS}
        return out

"""The one module of `containers` that talks netlink: wire a container (or a VM's TAP) into a tenant bridge.

A veth pair is made in our namespace; one end goes into the container's network namespace (found by
the pid of its first process), is renamed eth0 and gets the app's address, MTU and default route; the
other end becomes a port of the subnet's bridge. Attaching again (an address changed, the container
restarted) replaces what was there. ``read`` tells how a container is wired now (for drift repair).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from ipaddress import IPv4Interface
from typing import TypeVar

from pyroute2.iproute.linux import IPRoute  # not `from pyroute2`: see nsg/dataplane/pyroute2_light.py
from pyroute2.netlink.exceptions import NetlinkError

from containers.spec import AppSpec, Attachment

CONTAINER_IFNAME = "eth0"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class AttachError(RuntimeError):
    """The kernel refused a step of wiring a container (a local fault)."""


def _netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def _in_netns(pid: int, fn: Callable[[IPRoute], T]) -> T:
    """Run ``fn`` with a netlink socket inside the container's network namespace. A thread of our
    own enters it (setns changes only the calling thread) and ends with it. Not pyroute2's netns
    mode: that forks a helper, and the helper shares the daemon's asyncio signal wake-up fd, so its
    SIGTERM on exit reads as one to the daemon."""
    out: list = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(_netns_path(pid), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into pid {pid}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            with IPRoute() as inner:
                out.append(fn(inner))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as it is
            err.append(exc)

    t = threading.Thread(target=run, name=f"netns-{pid}")
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def attach(spec: AppSpec, pid: int) -> None:
    if pid <= 0:
        raise AttachError(f"{spec.container_name} is not running (no pid): cannot attach it")
    peer_tmp = "t-" + spec.host_ifname[2:]
    iface = IPv4Interface(spec.address)
    try:
        with IPRoute() as ip:
            for name in (spec.host_ifname, peer_tmp):  # a previous attach's leftovers
                for idx in ip.link_lookup(ifname=name):
                    ip.link("del", index=idx)
            bridge = ip.link_lookup(ifname=spec.bridge)
            if not bridge:
                raise AttachError(f"{spec.container_name}: bridge {spec.bridge} does not exist")
            ip.link("add", ifname=spec.host_ifname, kind="veth", peer={"ifname": peer_tmp})
            host = ip.link_lookup(ifname=spec.host_ifname)[0]
            peer = ip.link_lookup(ifname=peer_tmp)[0]
            fd = os.open(_netns_path(pid), os.O_RDONLY)
            try:
                ip.link("set", index=peer, net_ns_fd=fd)
            finally:
                os.close(fd)
            ip.link("set", index=host, mtu=spec.mtu, master=bridge[0])
            ip.link("set", index=host, state="up")

        def configure(inner: IPRoute) -> None:
            for idx in inner.link_lookup(ifname=CONTAINER_IFNAME):  # a stale eth0 from before
                inner.link("del", index=idx)
            idx = inner.link_lookup(ifname=peer_tmp)[0]
            inner.link("set", index=idx, ifname=CONTAINER_IFNAME, mtu=spec.mtu, address=spec.mac)
            inner.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            inner.link("set", index=idx, state="up")
            for lo in inner.link_lookup(ifname="lo"):
                inner.link("set", index=lo, state="up")
            if spec.gateway:
                inner.route("replace", dst="0.0.0.0/0", gateway=spec.gateway, oif=idx)

        _in_netns(pid, configure)
    except (NetlinkError, OSError) as exc:
        raise AttachError(f"attaching {spec.container_name} (pid {pid}) to {spec.bridge}: {exc}") from None


def read(spec: AppSpec, pid: int) -> Attachment | None:
    """How the container is wired now; None if it has no eth0 or our host end is gone."""
    if pid <= 0:
        return None
    try:
        with IPRoute() as ip:
            host = ip.link_lookup(ifname=spec.host_ifname)
            if not host:
                return None
            link = ip.get_links(host[0])[0]
            master = link.get("IFLA_MASTER")
            bridge = ip.get_links(master)[0].get("ifname") if master else None

        def look(inner: IPRoute) -> tuple[int | None, list[str], list[str]] | None:
            idx = inner.link_lookup(ifname=CONTAINER_IFNAME)
            if not idx:
                return None
            mtu = inner.get_links(idx[0])[0].get("IFLA_MTU")
            addrs = [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                     for a in inner.get_addr(family=socket.AF_INET, index=idx[0])]
            gws = [r.get("RTA_GATEWAY") for r in inner.get_routes(family=socket.AF_INET, table=254)
                   if r["dst_len"] == 0 and r.get("RTA_GATEWAY")]
            return mtu, addrs, gws

        seen = _in_netns(pid, look)
        if seen is None:
            return None
        mtu, addrs, gws = seen
    except (NetlinkError, OSError):
        return None  # the process is gone, or its namespace with it
    return Attachment(bridge, addrs[0] if len(addrs) == 1 else None, gws[0] if gws else None, mtu)


# -- VMs: a persistent TAP device on the bridge; qemu opens it by name -------------------------------


def tap_state(tap: str, bridge: str, mtu: int) -> str:
    """"ok" (up on ``bridge`` with ``mtu``), "detached" (exists, but not so) or "missing"."""
    with IPRoute() as ip:
        idx = ip.link_lookup(ifname=tap)
        if not idx:
            return "missing"
        link = ip.get_links(idx[0])[0]
        br = ip.link_lookup(ifname=bridge)
        ok = bool(br) and link.get("IFLA_MASTER") == br[0] and link.get("IFLA_MTU") == mtu and link["flags"] & 1
        return "ok" if ok else "detached"


def wire_tap(tap: str, bridge: str, mtu: int, *, create: bool) -> None:
    """Make the TAP (replacing a stale one) if ``create``; then put it up on ``bridge`` with ``mtu``."""
    try:
        with IPRoute() as ip:
            br = ip.link_lookup(ifname=bridge)
            if not br:
                raise AttachError(f"bridge {bridge} does not exist")
            if create:
                for idx in ip.link_lookup(ifname=tap):
                    ip.link("del", index=idx)
                ip.link("add", ifname=tap, kind="tuntap", mode="tap", ifr={"no_pi": True})
            idx = ip.link_lookup(ifname=tap)[0]
            ip.link("set", index=idx, mtu=mtu, master=br[0])
            ip.link("set", index=idx, state="up")
    except (NetlinkError, OSError, IndexError) as exc:
        raise AttachError(f"wiring TAP {tap} to {bridge}: {exc}") from None


def drop_tap(tap: str) -> None:
    try:
        with IPRoute() as ip:
            for idx in ip.link_lookup(ifname=tap):
                ip.link("del", index=idx)
    except NetlinkError:
        pass

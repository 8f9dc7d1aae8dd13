"""Kernel XFRM backend: program ESP SAs and policies over NETLINK_XFRM.

For kernels with ESP (appliance kernels). This development kernel has the XFRM
API but no ESP: it accepts policies and refuses ESP states; probe() tells which.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import time
from pathlib import Path

from ipsec.engine import xfrm_codec as x

log = logging.getLogger("ipsec.engine.xfrm")

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10


class XfrmError(RuntimeError):
    """The kernel refused an XFRM request (a local fault)."""

    def __init__(self, what: str, err: int, detail: str | None):
        self.errno = err
        self.detail = detail
        super().__init__(f"kernel refused {what}: {errno.errorcode.get(err, err)}" + (f" ({detail})" if detail else ""))


# The first ESP state makes the kernel load esp4 and instantiate the AEAD (crypto modules, self-tests):
# on a busy first boot under an emulator that took more than 5 s, and the probe said "no kernel ESP"
# (tests/e2e/appliance). Below the daemon's 60 s systemd watchdog.
PROBE_TIMEOUT_S = 30.0


class XfrmSocket:
    def __init__(self, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, x.NETLINK_XFRM)
        self.sock.setsockopt(SOL_NETLINK, x.NETLINK_EXT_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.bind((0, 0))
        self.sock.settimeout(timeout)  # the kernel answers at once; never hang the control plane
        self._seq = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def next_seq(self) -> int:
        return next(self._seq)

    def _recv(self, what: str, size: int) -> bytes:
        try:
            return self.sock.recv(size)
        except TimeoutError:
            raise XfrmError(what, errno.ETIMEDOUT, "no answer from the kernel") from None

    def request(self, what: str, build) -> None:
        seq = self.next_seq()
        self.sock.send(build(seq))
        while True:
            for reply in x.split(self._recv(what, 65536)):
                if reply.seq != seq or reply.msg_type != x.NLMSG_ERROR:
                    continue
                err, detail = x.error_of(reply)
                if err:
                    raise XfrmError(what, err, detail)
                return

    def dump(self, msg_type: int) -> list[x.Reply]:
        seq = self.next_seq()
        self.sock.send(x.dump(msg_type, seq))
        out: list[x.Reply] = []
        while True:
            for reply in x.split(self._recv("dump", 1 << 20)):
                if reply.seq != seq:
                    continue
                if reply.msg_type == x.NLMSG_DONE:
                    return out
                if reply.msg_type == x.NLMSG_ERROR:
                    err, detail = x.error_of(reply)
                    raise XfrmError("dump", err, detail)
                out.append(reply)


class XfrmBackend:
    backend = "xfrm"

    def __init__(self) -> None:
        self.nl = XfrmSocket()

    def close(self) -> None:
        self.nl.close()

    def add_sa(self, sa: x.XfrmSa) -> None:
        self.nl.request(f"ESP state SPI {sa.spi:#010x}", lambda seq: x.new_sa(sa, seq))

    def del_sa(self, dst: str, spi: int) -> None:
        self.nl.request(f"delete of SPI {spi:#010x}", lambda seq: x.del_sa(dst, spi, seq))

    def add_policy(self, pol: x.XfrmPolicy) -> None:
        self.nl.request(f"policy {pol.selector.src} -> {pol.selector.dst}", lambda seq: x.new_policy(pol, seq))

    def del_policy(self, selector: x.Selector, direction: int) -> None:
        self.nl.request("policy delete", lambda seq: x.del_policy(selector, direction, seq))

    def sas(self) -> list[x.SaInfo]:
        """Every ESP state the kernel holds, with its counters."""
        return [x.parse_sa(r.body) for r in self.nl.dump(x.XFRM_MSG_GETSA) if r.msg_type == x.XFRM_MSG_NEWSA]

    def policies(self) -> list[x.PolicyInfo]:
        return [x.parse_policy(r.body) for r in self.nl.dump(x.XFRM_MSG_GETPOLICY)
                if r.msg_type == x.XFRM_MSG_NEWPOLICY]

    def install_tunnel(self, local: str, remote: str, local_inner: str, remote_inner: str, reqid: int,
                       out_spi: int, out_key: bytes, in_spi: int, in_key: bytes,
                       encap: tuple[int, int] | None = (4500, 4500)) -> None:
        """One child SA pair protecting local_inner <-> remote_inner (/32s), tunnel mode."""
        sel_out = x.Selector(f"{local_inner}/32", f"{remote_inner}/32")
        sel_in = x.Selector(f"{remote_inner}/32", f"{local_inner}/32")
        rev = (encap[1], encap[0]) if encap else None
        self.add_sa(x.XfrmSa(local, remote, out_spi, out_key, reqid, sel_out, encap))
        self.add_sa(x.XfrmSa(remote, local, in_spi, in_key, reqid, sel_in, rev))
        self.add_policy(x.XfrmPolicy(sel_out, x.XFRM_POLICY_OUT, local, remote, reqid))
        self.add_policy(x.XfrmPolicy(sel_in, x.XFRM_POLICY_IN, remote, local, reqid))
        self.add_policy(x.XfrmPolicy(sel_in, x.XFRM_POLICY_FWD, remote, local, reqid))


def kernel_ships_esp(release: str | None = None, root: Path = Path("/")) -> bool:
    """True when the running kernel has ESP, loaded or as a module it can load: then a refused probe
    is a passing fault (modprobe busy at boot, crypto self-tests not done), not an answer."""
    if (root / "sys/module/esp4").exists():
        return True
    release = release or os.uname().release
    for name in ("modules.builtin", "modules.dep"):
        try:
            text = (root / "lib/modules" / release / name).read_text(errors="replace")
        except OSError:
            continue
        if "/esp4.ko" in text:
            return True
    return False


def probe(*, deadline_s: float = PROBE_TIMEOUT_S, ships_esp: bool | None = None,
          sleep=time.sleep, clock=time.monotonic, connect=lambda: XfrmSocket(timeout=PROBE_TIMEOUT_S)) -> bool:
    """True when this kernel takes ESP states (then the XFRM backend is used). A kernel without ESP
    (this development kernel: ENOSYS, no AEAD) is answered by one refusal. A kernel that ships ESP is
    asked again until ``deadline_s``: on a starved first boot its first answer can be a refusal
    (tests/e2e/appliance saw kernel_esp=false twice), and choosing userspace ESP for good on that
    would cost the box its kernel data path until the next restart."""
    ships = kernel_ships_esp() if ships_esp is None else ships_esp
    end = clock() + deadline_s
    pause = 0.5
    attempt = 0
    while True:
        attempt += 1
        spi = 0xFFFFFF00 | (attempt & 0xFF)  # a fresh key per try: no EEXIST from a state a lost reply left
        try:
            _probe_once(connect, spi)
            if attempt > 1:
                log.info("the kernel took the ESP probe at try %d", attempt)
            return True
        except XfrmError as exc:
            if exc.errno == errno.ETIMEDOUT:
                log.warning("the kernel did not answer the ESP probe within %.0f s: using userspace ESP",
                            PROBE_TIMEOUT_S)
                return False
            if not ships or clock() + pause > end:
                (log.warning if ships else log.info)(
                    "no kernel ESP (%s, try %d): using userspace ESP", exc, attempt)
                return False
            log.warning("the kernel ships ESP but refused the probe (%s, try %d): asking again in %.1f s",
                        exc, attempt, pause)
            sleep(pause)
            pause = min(pause * 2, 4.0)


def _probe_once(connect, spi: int) -> None:
    try:
        nl = connect()
    except OSError as exc:  # no NETLINK_XFRM at all (xfrm_user not there): a refusal like any other
        raise XfrmError("an XFRM socket", exc.errno or errno.EPROTONOSUPPORT, None) from None
    try:
        sel = x.Selector("192.0.2.1/32", "192.0.2.2/32")
        sa = x.XfrmSa("192.0.2.1", "192.0.2.2", spi, bytes(20), 0xFFFF, sel, None)
        nl.request("probe state", lambda seq: x.new_sa(sa, seq))
        try:  # the kernel took it: that is the answer, whatever the cleanup says
            nl.request("probe cleanup", lambda seq: x.del_sa("192.0.2.2", spi, seq))
        except XfrmError as exc:
            log.warning("the ESP probe's state SPI %#x stays in the kernel: %s", spi, exc)
    finally:
        nl.close()

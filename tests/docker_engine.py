"""A private Docker engine for the tests (../shared/PEERS.md): its own socket, data and exec roots,
no bridge and no iptables of its own; stopped by pid and its directories removed afterwards.
Images are built offline: a busybox-static root filesystem imported as an image (no registry)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker

from tests.interop.procs import stop_process

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
# dockerd runs containerd and runc (docker.io depends on both); each with its Debian 12 package
HELPERS = {"containerd": "containerd", "runc": "runc"}


def missing() -> list[str]:
    """What the private engine lacks here (each line names the Debian package); empty when all is there."""
    out = []
    if not os.access(DOCKERD, os.X_OK):
        out.append(f"dockerd {DOCKERD} missing (Debian package docker.io)")
    out += [f"{cmd} not found (Debian package {pkg}, a dependency of docker.io)"
            for cmd, pkg in HELPERS.items() if shutil.which(cmd) is None]
    if not os.path.exists(BUSYBOX):
        out.append(f"{BUSYBOX} missing (Debian package busybox-static: the test image is built from it)")
    return out


def available() -> bool:
    return not missing()


class DockerEngine:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nsgd-", dir="/tmp"))  # short: unix socket paths are
        self.sock = self.dir / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "dockerd.log"
        self.client: docker.DockerClient | None = None

    def start(self, timeout: float = 30) -> DockerEngine:
        absent = missing()
        if absent:
            raise RuntimeError("cannot run dockerd here: " + "; ".join(absent))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [DOCKERD, "--host", self.url, "--data-root", str(self.dir / "data"), "--exec-root",
                 str(self.dir / "exec"), "--pidfile", str(self.dir / "dockerd.pid"), "--iptables=false",
                 "--ip6tables=false", "--bridge=none", "--storage-driver", "overlay2",
                 "--shutdown-timeout", "1"],  # a `sleep` as PID 1 ignores SIGTERM: do not wait 10 s
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log.read_text()[-2000:]}")
            try:
                self.client = docker.DockerClient(base_url=self.url, timeout=30)
                if self.client.ping():
                    return self
            except docker.errors.DockerException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd not ready in {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(docker.errors.DockerException, OSError):
                for c in self.client.containers.list(all=True):
                    c.remove(force=True)
            self.client.close()
        if self.proc is not None:
            stop_process(self.proc, timeout=20)  # dockerd stops its containerd on the way out
        # overlay mounts left by a crash would keep the directory busy
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.dir))]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """dockerd stops and starts again on the same data (its containers go down with it)."""
        assert self.proc is not None
        if self.client is not None:
            self.client.close()
        stop_process(self.proc, timeout=20)
        self.start()

    def busybox_image(self, tag: str = "nsg-test/busybox:1") -> str:
        """A busybox-static root filesystem as an image; returns its reference."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in ("sh", "sleep", "ping", "ip", "ifconfig", "cat", "httpd", "nc", "true", "dd", "head"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        repo, _, version = tag.partition(":")
        assert self.client is not None
        self.client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=version)
        return tag

"""Writing a root filesystem image to a slot's block device (the only module here that writes one).

The device is found by GPT partition label (/dev/disk/by-partlabel/nsg-root-a|b, udev's links): labels
are the disk contract, device names (sda, nvme0n1, vda) are not. The slot written is never the one
mounted as / (checked by device number, and a block device is opened O_EXCL, which the kernel refuses
while it is mounted). After the last byte: fsync, drop the device's cached pages (so the read-back comes
from the device, not from memory) and hash it again. Only after all that may the caller arm the slot.
Tests stand a regular file in for the partition.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from nsg.upgrade.errors import BoxError
from nsg.upgrade.paths import PARTLABEL_DIR
from nsg.upgrade.record import Slot

CHUNK = 1 << 20


def partlabel(slot: Slot) -> str:
    return f"nsg-root-{slot}"


def slot_device(slot: Slot, partlabel_dir: Path = PARTLABEL_DIR, *, root: Path = Path("/")) -> Path:
    link = partlabel_dir / partlabel(slot)
    try:
        dev = link.resolve(strict=True)
        st = dev.stat()
    except OSError:
        raise BoxError("no-slot", f"no partition labelled {partlabel(slot)} ({link} is missing)") from None
    if stat.S_ISBLK(st.st_mode) and st.st_rdev == root.stat().st_dev:
        raise BoxError("slot-mounted", f"{link} ({dev}) is the mounted root file system; refusing to write it")
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise BoxError("no-slot", f"{link} ({dev}) is neither a block device nor a file")
    return dev


class SlotWriter:
    """A sink for nsg.upgrade.bundle.verify_stream: write() each chunk in order, then finish()."""

    def __init__(self, device: Path, size: int, slot: Slot):
        self.device, self.size, self.slot = device, size, slot
        self.written = 0
        self.hash = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CLOEXEC
        with contextlib.suppress(OSError):
            if stat.S_ISBLK(device.stat().st_mode):
                flags |= os.O_EXCL  # on a block device: EBUSY while anything has it mounted
        try:
            self.fd = os.open(device, flags)  # never O_CREAT/O_TRUNC: the partition exists and keeps its size
        except OSError as exc:
            code = "slot-busy" if exc.errno == errno.EBUSY else "no-slot"  # EBUSY: O_EXCL and mounted
            raise BoxError(code, f"cannot open slot {slot} ({device}) for writing: {exc.strerror}") from None
        try:
            capacity = os.lseek(self.fd, 0, os.SEEK_END)
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError as exc:
            os.close(self.fd)
            raise BoxError("no-slot", f"slot {slot} ({device}): {exc.strerror}") from None
        if size > capacity:
            os.close(self.fd)
            raise BoxError("slot-too-small", f"the image is {size} bytes, slot {slot} ({device}) holds {capacity}")

    def write(self, chunk: bytes) -> None:
        if self.written + len(chunk) > self.size:
            raise BoxError("io", f"slot {self.slot}: more bytes than the image's {self.size}")
        view = memoryview(chunk)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            raise BoxError("io", f"writing slot {self.slot} ({self.device}) at byte {self.written}: "
                                 f"{exc.strerror}") from None
        self.hash.update(chunk)
        self.written += len(chunk)

    def finish(self, sha256: str) -> None:
        """fsync, then read the slot back from the device and compare its hash with the manifest's."""
        try:
            if self.written != self.size:
                raise BoxError("io", f"slot {self.slot}: {self.written} of {self.size} bytes written")
            if self.hash.hexdigest() != sha256:  # what we were handed (a bug or a changed file, not the device)
                raise BoxError("io", f"slot {self.slot}: the bytes written do not have the manifest's SHA-256")
            os.fsync(self.fd)
        except OSError as exc:
            raise BoxError("io", f"flushing slot {self.slot} ({self.device}): {exc.strerror}") from None
        finally:
            self.close()
        got = read_back(self.device, self.size)
        if got != sha256:
            raise BoxError("readback-mismatch", f"slot {self.slot} ({self.device}) reads back SHA-256 {got}, "
                                                f"written {sha256}: the device did not keep what was written")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_back(device: Path, size: int) -> str:
    h = hashlib.sha256()
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BoxError("io", f"cannot read back {device}: {exc.strerror}") from None
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages dropped: read from the device
        left = size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise BoxError("io", f"{device} ends {left} bytes before the image does")
            h.update(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise BoxError("io", f"reading back {device}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return h.hexdigest()

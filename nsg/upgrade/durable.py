"""A file replaced whole and durably: written to a temporary name beside it, fsynced, renamed over it,
and the directory fsynced, so a power cut leaves either the old file or the new one. Used for the
upgrade record, the agent's record and a new GRUB environment block (an existing block is edited in
place instead: nsg/upgrade/grubenv.py says why)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``path`` holds ``data`` now. OSError is the caller's; the temporary file never stays behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # some file systems (vfat on old kernels) refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)

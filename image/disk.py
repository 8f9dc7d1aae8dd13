"""Reading and changing a built disk image from the outside, as tests and tools need: GRUB's
environment on the ESP (mtools at the partition's offset) and a root slot's contents. Nothing is
mounted; the image is a plain file.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from image import gpt, grub, layout

_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def partition(image: Path, label: str) -> gpt.Partition:
    with image.open("rb") as f:
        return gpt.find(gpt.read(f), label)


def _esp(image: Path) -> str:
    return f"{image}@@{partition(image, layout.LABEL_ESP).offset}"


def esp_read(image: Path, path: str) -> bytes:
    """A file of the ESP (path relative to its root, e.g. "grub/grubenv")."""
    p = subprocess.run(["mtype", "-i", _esp(image), f"::/{path}"], capture_output=True, check=True,
                       env={**os.environ, **_MTOOLS_ENV})
    return p.stdout


def esp_write(image: Path, path: str, data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(data)
        tmp.flush()
        subprocess.run(["mcopy", "-o", "-i", _esp(image), tmp.name, f"::/{path}"], check=True,
                       env={**os.environ, **_MTOOLS_ENV})


def read_grubenv(image: Path) -> dict[str, str]:
    return grub.parse_grubenv(esp_read(image, f"{layout.ESP_GRUB_DIR}/grubenv"))


def write_grubenv(image: Path, values: dict[str, str]) -> None:
    esp_write(image, f"{layout.ESP_GRUB_DIR}/grubenv", grub.grubenv_block(values))


def copy_slot(image: Path, src: str, dst: str) -> None:
    """Fill root slot ``dst`` with a copy of slot ``src`` (what an upgrade writes, here the same
    system), skipping all-zero MiBs on both sides so the image stays sparse."""
    a, b = partition(image, layout.root_label(src)), partition(image, layout.root_label(dst))
    if b.size < a.size:
        raise ValueError(f"slot {dst} is smaller than slot {src}")
    chunk = 1 << 20
    with image.open("r+b") as f:
        for off in range(0, a.size, chunk):
            f.seek(a.offset + off)
            data = f.read(min(chunk, a.size - off))
            if data.count(0) != len(data):
                f.seek(b.offset + off)
                f.write(data)

"""The upgrade record, /var/lib/nsg/upgrade.json on the persistent data partition: the last attempt and
how far it got, which version each slot holds, and the refusals counted by code.

It survives a slot switch (the data partition is shared), so the boot after a failed trial can tell
"the trial fell back" from "nothing happened", and the controller hears of both. It is written with
temp + fsync + rename + directory fsync (ext4: atomic across a power cut). A record that does not parse
is moved aside (upgrade.json.bad) rather than blocking upgrades and commits forever.
"""

from __future__ import annotations

import json
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nsg.upgrade.durable import replace_file
from nsg.upgrade.errors import BoxError, UpgradeError

log = logging.getLogger("nsg.upgrade")

RECORD_NAME = "upgrade.json"
Slot = Literal["a", "b"]


class Phase(StrEnum):
    WRITING = "writing"  # the target slot is being written (it is not bootable)
    ARMED = "armed"  # written and read back; nsg_try names it: it boots once at the next reboot
    TRYING = "trying"  # the trial booted and waits to be healthy
    UNHEALTHY = "unhealthy"  # the trial was not healthy in time and rebooted (to the old slot)
    COMMITTED = "committed"  # the trial was healthy: its slot is the box's slot now
    FELL_BACK = "fell-back"  # the boot after a trial that did not commit: the old slot again
    INTERRUPTED = "interrupted"  # the write stopped part way (power cut, killed); the old slot kept
    FAILED = "failed"  # the write or its read-back failed; the old slot kept

    @property
    def final(self) -> bool:
        return self in (Phase.COMMITTED, Phase.FELL_BACK, Phase.INTERRUPTED, Phase.FAILED)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Attempt(_Frozen):
    from_slot: Slot
    from_version: str
    target_slot: Slot
    target_version: str
    build: str = ""
    key_id: str = ""  # the release key that verified the bundle
    phase: Phase
    started: float  # time.time()
    updated: float
    commit_after_s: float = Field(gt=0)
    reason: str = ""  # why it failed or fell back


class Refusal(_Frozen):
    at: float
    code: str
    fault: str
    message: str


class Record(_Frozen):
    format: Literal[1] = 1
    attempt: Attempt | None = None
    slot_versions: dict[Slot, str | None] = Field(default_factory=dict)  # None: being written or unknown
    refused: dict[str, int] = Field(default_factory=dict)  # refusals and failures by code, since the box began
    last_refusal: Refusal | None = None

    def with_attempt(self, attempt: Attempt | None, **slot_versions: str | None) -> Record:
        return self.model_copy(update={"attempt": attempt, "slot_versions": {**self.slot_versions, **slot_versions}})

    def with_refusal(self, exc: UpgradeError, now: float) -> Record:
        refused = {**self.refused, exc.code: self.refused.get(exc.code, 0) + 1}
        return self.model_copy(update={"refused": refused,
                                       "last_refusal": Refusal(at=now, code=exc.code, fault=exc.fault,
                                                               message=exc.message[:2000])})


def load_record(path: Path) -> Record:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Record()
    except OSError as exc:
        raise BoxError("record-unreadable", f"cannot read {path}: {exc.strerror}") from None
    try:
        return Record.model_validate_json(raw)
    except ValidationError as exc:
        bad = path.with_name(path.name + ".bad")
        log.warning("upgrade record %s is invalid (%s); moved to %s", path, exc.errors()[0]["msg"], bad)
        os.replace(path, bad)
        return Record()


def save_record(path: Path, record: Record) -> None:
    data = json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True).encode() + b"\n"
    try:
        replace_file(path, data)
    except OSError as exc:
        raise BoxError("record-unwritable", f"cannot write {path}: {exc.strerror}") from None

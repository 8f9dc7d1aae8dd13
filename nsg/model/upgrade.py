"""Upgrades in the gateway's schema: what the controller asks for (the config's ``upgrade`` section) and
what the box says back (its upgrade state, in `nsg status` and on the channel; docs/upgrades.md).

``upgrade`` (UpgradeTarget): the release this gateway should run, and the signed bundles the controller
serves for it, one per hardware model (the box picks its own model's; it alone knows it for sure, so the
controller never renders from what a gateway reports). The section is rendered whatever the box runs:
the box decides (nsg/upgrade/agent.py). ``retry`` is the operator's word that a version which failed here
may be tried once more: a failed version is never tried again by itself.

UpgradeState: what the box reports. Bounded field by field (the controller validates it like everything
a gateway sends; it travels as a channel event's detail, at most 4 KiB); unknown fields are ignored, so
a newer box's report still reads. Its phase and state names are those of nsg/upgrade/record.py and
slots.py (tests/unit/upgrade/test_agent.py keeps them equal).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nsg.model.base import Frozen
from nsg.model.tenant_workloads import source_url
from nsg.upgrade.manifest import SemVer

MAX_BUNDLE = 4 << 30  # bytes (nsg.upgrade.download.MAX_BUNDLE)
MAX_REASON = 256  # characters of a reason or message in a report
MAX_REFUSAL_CODES = 16  # refusal counters a report carries (the most frequent)
MODEL_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # nsg.upgrade.manifest's model names

Slot = Literal["a", "b"]
Model = Annotated[str, Field(pattern=MODEL_PATTERN)]
VersionText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z.+-]+$")]
Reason = Annotated[str, Field(max_length=MAX_REASON)]
Code = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Timestamp = Annotated[float, Field(ge=0, le=2**63 - 1, allow_inf_nan=False)]


# --- the config section -------------------------------------------------------------------------


class UpgradeBundle(Frozen):
    """One signed bundle of the target release: for which model, where (the controller's device site,
    fetched with the box's LDevID), and the SHA-256 and size of the file the controller verified."""

    model: Model
    url: str = Field(max_length=2048)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0, le=MAX_BUNDLE)

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError("a bundle is fetched over https:// only")
        return source_url(v)


class UpgradeTarget(Frozen):
    version: SemVer
    bundles: tuple[UpgradeBundle, ...] = Field(min_length=1, max_length=16)
    commit_after_s: float = Field(default=300.0, ge=5, le=86400)  # the trial's time to become healthy
    retry: int = Field(default=0, ge=0, le=2**31 - 1)  # bumped by the operator: one more try of a failed version

    @model_validator(mode="after")
    def _one_per_model(self) -> UpgradeTarget:
        models = [b.model for b in self.bundles]
        if len(set(models)) != len(models):
            raise ValueError("bundles: one bundle per model")
        return self

    def bundle_for(self, model: str) -> UpgradeBundle | None:
        return next((b for b in self.bundles if b.model == model), None)


# --- what the box reports -----------------------------------------------------------------------


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


Phase = Literal["writing", "armed", "trying", "unhealthy", "committed", "fell-back", "interrupted", "failed"]
BootState = Literal["committed", "armed", "trial", "fell-back", "interrupted"]
Fault = Literal["bundle", "policy", "box", "server", "operator"]
# what the box's upgrade agent is doing about the config's target (nsg/upgrade/agent.py)
Action = Literal["off", "none", "not-appliance", "no-bundle", "up-to-date", "trial", "downloading", "installing",
                 "rebooting", "retry-wait", "held"]


class AttemptReport(_Report):
    """The last install the box recorded (nsg.upgrade.record.Attempt) and how far it got."""

    from_version: VersionText
    target_version: VersionText
    from_slot: Slot
    target_slot: Slot
    phase: Phase
    started: Timestamp
    updated: Timestamp
    reason: Reason = ""


class RefusalReport(_Report):
    at: Timestamp
    code: Code
    fault: Fault
    message: Reason = ""


class AgentReport(_Report):
    action: Action
    target: VersionText | None = None  # the version the config asks for
    detail: Reason = ""
    since: Timestamp | None = None


class UpgradeState(_Report):
    """The box's slots, versions, last attempt and refusals (nsg.upgrade.slots.UpgradeReport, bounded),
    and what its agent does about the config's target. ``appliance`` false: no A/B box here (a dev tree,
    or an image without release info): ``detail`` says why; nothing else is known."""

    appliance: bool
    detail: Reason = ""
    model: Model | None = None
    running_version: VersionText | None = None
    committed_version: VersionText | None = None
    booted_slot: Slot | None = None
    committed_slot: Slot | None = None
    armed_slot: Slot | None = None
    state: BootState | None = None
    slot_versions: dict[Slot, VersionText | None] = {}
    last_attempt: AttemptReport | None = None
    last_refusal: RefusalReport | None = None
    refused: dict[Code, Count] = Field(default={}, max_length=MAX_REFUSAL_CODES)
    agent: AgentReport = AgentReport(action="off")

    def outcome(self) -> str:
        """The last attempt's outcome, for people: "committed", "fell back: ...", "refused (code): ...",
        "interrupted", "failed: ...", "in progress (armed)" or "" (none yet). A refusal newer than the last
        attempt is the last word (a refused bundle never becomes an attempt: nothing was written)."""
        a, r = self.last_attempt, self.last_refusal
        if r is not None and (a is None or r.at >= a.updated):
            return f"refused ({r.code}): {r.message}"
        if a is None:
            return ""
        if a.phase == "committed":
            return "committed"
        if a.phase in ("fell-back", "unhealthy") or (self.state == "fell-back" and a.phase in ("armed", "trying")):
            return "fell back" + (f": {a.reason}" if a.reason else "")
        if a.phase == "interrupted" or (self.state == "interrupted" and a.phase == "writing"):
            return "interrupted" + (f": {a.reason}" if a.reason else "")
        if a.phase == "failed":
            return "failed" + (f": {a.reason}" if a.reason else "")
        return f"in progress ({a.phase})"

    def attempt_line(self) -> str:
        """"1.2.0 -> 1.3.0 (slot b)", or "" when the box recorded no attempt."""
        a = self.last_attempt
        return "" if a is None else f"{a.from_version} -> {a.target_version} (slot {a.target_slot})"

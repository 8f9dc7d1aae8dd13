"""Commit-confirm for configs from the controller (issue 13 section 3). Pure: time is passed in.

A config that arrives over the channel is applied at once but is only on trial: it becomes the box's
last good config (the one it boots with) when the controller confirms it, which the controller does
when it hears from the gateway over the channel *with that generation running*. A config that cuts
the box off from its controller (a wrong uplink address, a route that swallows the channel) never
gets that confirm: when the window closes, the previous generation is put back, the box reconnects,
and it reports the rollback and its reason. The controller then marks that generation failed for
the gateway and does not push it again; the gateway refuses it too, should it come again.

    start(trial) --confirm(g)--> committed (persist last good)
         \\--due(now) at the deadline--> rolled back (the daemon re-applies trial.previous)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nsg.model import GatewayConfig
from nsg.model.status import CommitConfirmStatus, RollbackStatus, TrialStatus

DEFAULT_WINDOW_S = 60.0


@dataclass(frozen=True)
class Trial:
    generation: int
    previous: GatewayConfig
    previous_generation: int
    deadline: float  # monotonic seconds
    window_s: float
    previous_credentials: Any = field(default=None, compare=False)  # what the daemon loaded for ``previous``


@dataclass(frozen=True)
class Rollback:
    generation: int  # the generation undone
    restored: int  # the generation running again
    reason: str
    at: float  # wall clock, for people


class CommitConfirm:
    def __init__(self, default_window_s: float = DEFAULT_WINDOW_S) -> None:
        self.default_window_s = default_window_s
        self.trial: Trial | None = None
        self.last_rollback: Rollback | None = None
        self.unreported: Rollback | None = None  # told to the controller once the channel is up
        self.counters = {"trials": 0, "confirmed": 0, "rolled_back": 0, "refused_again": 0}

    def start(self, generation: int, previous: GatewayConfig, previous_generation: int, now: float,
              window_s: float | None = None, previous_credentials: Any = None) -> Trial:
        """``generation`` now runs on trial; ``previous`` is what comes back if it is not confirmed (with
        the credentials loaded for it, kept as they are). A new trial while one runs keeps the older
        fallback: the last *confirmed* config is what comes back."""
        window = self.default_window_s if window_s is None else window_s
        if self.trial is not None:
            previous, previous_generation = self.trial.previous, self.trial.previous_generation
            previous_credentials = self.trial.previous_credentials
        self.trial = Trial(generation, previous, previous_generation, now + window, window, previous_credentials)
        self.counters["trials"] += 1
        return self.trial

    def confirm(self, generation: int) -> bool:
        """True when that made the running generation the last good one."""
        if self.trial is None or self.trial.generation != generation:
            return False
        self.trial = None
        self.counters["confirmed"] += 1
        if self.last_rollback is not None and generation > self.last_rollback.generation:
            self.last_rollback = None  # a newer generation holds: the failed one is history (counted)
        return True

    def due(self, now: float) -> Trial | None:
        return self.trial if self.trial is not None and now >= self.trial.deadline else None

    def rolled_back(self, trial: Trial, reason: str, at: float | None = None) -> Rollback:
        rb = Rollback(trial.generation, trial.previous_generation, reason, time.time() if at is None else at)
        self.trial = None
        self.last_rollback = self.unreported = rb
        self.counters["rolled_back"] += 1
        return rb

    def refuses(self, generation: int) -> bool:
        """A generation this box already rolled back is not applied again (the controller should not
        send it; if it does, the box stays reachable)."""
        if self.last_rollback is not None and self.last_rollback.generation == generation:
            self.counters["refused_again"] += 1
            return True
        return False

    def status(self, now: float) -> CommitConfirmStatus:
        t, rb = self.trial, self.last_rollback
        return CommitConfirmStatus(
            pending=None if t is None else TrialStatus(generation=t.generation, fallback=t.previous_generation,
                                                       seconds_left=round(max(0.0, t.deadline - now), 1)),
            last_rollback=None if rb is None else RollbackStatus(generation=rb.generation, restored=rb.restored,
                                                                 reason=rb.reason, at=rb.at),
            **self.counters)

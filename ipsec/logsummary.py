"""Rate limit for log lines that remote input causes, sans-IO: the caller passes the time in.

Anyone on the Internet can send a gateway datagrams it must refuse; one warning per refusal
lets a trivial flood write hundreds of lines a second and bury everything else. Per kind of
event (a fixed, small set named by the code, never by the sender) the summariser lets the
first few through, holds back the rest of a window, and then hands out one summary:

    1,203 refused IKE_SA_INIT from 37 addresses in the last 10 s (NO_PROPOSAL_CHOSEN 1,100, ...)

A window that ended with a summary is followed by windows that only summarise, until a
whole window passes without any event; so a sustained flood costs one line per window.

    s = LogSummariser(window=10.0, burst=3)
    if s.note("refused IKE_SA_INIT", "203.0.113.5", now, reason="NO_PROPOSAL_CHOSEN"):
        log.warning(...)                      # one of the first few: log it in full
    for summary in s.due(now):                # call at s.next_due() (a timer), or on any event
        log.warning(summary.text())
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_S = 10.0  # tuning: one summary per kind at most this often
BURST = 3  # tuning: lines let through one by one at the start of a quiet spell
MAX_ADDRESSES = 4096  # tuning: distinct sources remembered per window (memory bound under a flood)
MAX_REASONS = 4  # reasons named in a summary, most frequent first


@dataclass(frozen=True)
class Summary:
    what: str
    count: int  # events in the window, those let through included
    addresses: int  # distinct sources (a lower bound when ``capped``)
    capped: bool
    window: float
    logged: int  # how many of ``count`` the caller logged one by one
    reasons: tuple[tuple[str, int], ...] = ()

    def text(self) -> str:
        addr = f"{'at least ' if self.capped else ''}{self.addresses:,} address{'' if self.addresses == 1 else 'es'}"
        out = f"{self.count:,} {self.what} from {addr} in the last {self.window:g} s"
        if self.reasons:
            out += " (" + ", ".join(f"{r} {n:,}" for r, n in self.reasons) + ")"
        return out


@dataclass
class _Kind:
    start: float
    allowance: int
    count: int = 0
    logged: int = 0
    sources: set[str] = field(default_factory=set)
    capped: bool = False
    reasons: dict[str, int] = field(default_factory=dict)


class LogSummariser:
    def __init__(self, window: float = WINDOW_S, burst: int = BURST, max_addresses: int = MAX_ADDRESSES):
        if window <= 0 or burst < 0 or max_addresses < 1:
            raise ValueError("window must be positive, burst and max_addresses not negative")
        self.window = window
        self.burst = burst
        self.max_addresses = max_addresses
        self._kinds: dict[str, _Kind] = {}  # the open window of each kind
        self._hot: dict[str, float] = {}  # kind -> end of its last window that had to be summarised
        self._ready: list[Summary] = []  # closed by note() before due() was asked

    def note(self, what: str, source: str, now: float, reason: str | None = None) -> bool:
        """One event of kind ``what`` from ``source`` (an address) at time ``now`` (seconds, any
        monotonic origin). True: the caller should log this one in full."""
        k = self._kinds.get(what)
        if k is not None and now >= k.start + self.window:
            self._close(what, k)
            k = None
        if k is None:
            hot_until = self._hot.get(what)
            hot = hot_until is not None and now < hot_until + self.window
            if not hot:
                self._hot.pop(what, None)
            k = self._kinds[what] = _Kind(start=now, allowance=0 if hot else self.burst)
        k.count += 1
        if reason is not None and (reason in k.reasons or len(k.reasons) < 64):  # bounded, though code names them
            k.reasons[reason] = k.reasons.get(reason, 0) + 1
        if len(k.sources) < self.max_addresses:
            k.sources.add(source)
        elif source not in k.sources:
            k.capped = True
        if k.allowance > 0:
            k.allowance -= 1
            k.logged += 1
            return True
        return False

    def due(self, now: float) -> list[Summary]:
        """Summaries of every window that has ended by ``now`` and held something back."""
        for what, k in list(self._kinds.items()):
            if now >= k.start + self.window:
                self._close(what, k)
        out, self._ready = self._ready, []
        return out

    def next_due(self) -> float | None:
        """When the next summary may be due (the earliest end of a window that held something
        back); None: no summary is pending."""
        ends = [k.start + self.window for k in self._kinds.values() if k.count > k.logged]
        return min(ends) if ends else None

    def _close(self, what: str, k: _Kind) -> None:
        del self._kinds[what]
        held_back = k.count - k.logged
        if held_back <= 0:
            return
        end = k.start + self.window
        self._hot[what] = end
        reasons = tuple(sorted(k.reasons.items(), key=lambda kv: -kv[1])[:MAX_REASONS])
        self._ready.append(Summary(what, k.count, len(k.sources), k.capped, self.window, k.logged, reasons))

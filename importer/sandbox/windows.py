"""Rate limits as sliding windows, the way the sandbox enforces them.

A `RateWindow` is "at most `limit` requests in any `seconds`"; a sandbox may have any number
of them (`8/1s` and `480/60s` together). `SlidingWindows.arrive(now)` is called once for every
request that reaches an API route and decides whether it is admitted.

What it promises:
- Every arrival is counted, admitted or not, as a real API counts every request it sees: a
  client that keeps knocking while refused keeps its window full (and, knocking fast enough,
  is never admitted again). With `count_refused=False` only admitted requests are counted,
  as Laravel's own throttle does.
- A request is admitted only if, in every window, fewer than `limit` arrivals fall in
  `(now - seconds, now]`. So the admitted requests never number more than `limit` in any
  interval shorter than `seconds` (`stats.max_in_window` checks exactly this).
- A refused request learns `retry_after`: the seconds until the next request would be
  admitted, if nothing else arrives meanwhile.

It does not know about wall-clock time or the event loop: `now` is passed in, so tests move
time by hand.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "day": 86400.0}
_WINDOW = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RateWindow:
    """At most `limit` requests in any interval of `seconds`."""

    limit: int
    seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"a rate window needs a limit of at least 1, not {self.limit}")
        if self.seconds <= 0:
            raise ValueError(f"a rate window needs a positive length, not {self.seconds}")

    def __str__(self) -> str:
        return f"{self.limit}/{self.seconds:g}s"


def parse_window(text: str) -> RateWindow:
    """Read `8/1s`, `480/60s`, `500/min`, `3000/h`, `50000/day` (N per duration)."""
    match = _WINDOW.fullmatch(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(
            f"{text!r} is not a rate window: write N/DURATION, e.g. 8/1s, 480/60s, 500/min, 3000/h"
        )
    amount = float(match.group(2)) if match.group(2) else 1.0
    return RateWindow(limit=int(match.group(1)), seconds=amount * unit)


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one arrival, with what the `X-RateLimit-*` headers report.

    `limit`, `remaining` and `reset_after` describe the tightest window (the one with the
    fewest requests left); they are None when there are no windows. `reset_after` is the
    seconds until that window frees its next slot.
    """

    admitted: bool
    retry_after: float = 0.0
    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None


class SlidingWindows:
    """Counts arrivals in each window and admits a request only if every window has room."""

    def __init__(self, windows: Sequence[RateWindow], *, count_refused: bool = True) -> None:
        self.windows = tuple(windows)
        self.count_refused = count_refused
        self._arrivals: list[deque[float]] = [deque() for _ in self.windows]

    def arrive(self, now: float) -> Admission:
        """Count one request arriving at `now` (seconds, monotonic) and decide on it."""
        if not self.windows:
            return Admission(admitted=True)
        for window, arrivals in zip(self.windows, self._arrivals, strict=True):
            horizon = now - window.seconds
            while arrivals and arrivals[0] <= horizon:
                arrivals.popleft()
        admitted = all(
            len(arrivals) < window.limit
            for window, arrivals in zip(self.windows, self._arrivals, strict=True)
        )
        if admitted or self.count_refused:
            for arrivals in self._arrivals:
                arrivals.append(now)
        return self._verdict(admitted, now)

    def _verdict(self, admitted: bool, now: float) -> Admission:
        pairs = list(zip(self.windows, self._arrivals, strict=True))
        waits = [
            arrivals[len(arrivals) - window.limit] + window.seconds - now
            for window, arrivals in pairs
            if len(arrivals) >= window.limit
        ]
        window, arrivals = min(pairs, key=lambda pair: pair[0].limit - len(pair[1]))
        return Admission(
            admitted=admitted,
            retry_after=0.0 if admitted else max(waits),
            limit=window.limit,
            remaining=max(0, window.limit - len(arrivals)),
            reset_after=max(0.0, arrivals[0] + window.seconds - now),
        )

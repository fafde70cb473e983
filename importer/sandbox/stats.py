"""What the sandbox saw, for tests and benchmarks: answers by route and status, and when.

`SandboxStats` is kept in memory by a running sandbox (`sandbox.stats`) and served as JSON at
`GET /_sandbox/stats`. It records every request to an API route:

- `responses`: how many answers per (method, route, status), the route as its template
  (`/v1/contacts/{contact}/activities`); status 0 stands for a dropped connection;
- `throttled`: how many were answered 429;
- `admitted_times`: the arrival time (`loop.time()`) of every request the rate limit let
  through, in arrival order, so `max_in_window(times, seconds)` can tell how many were
  admitted in the busiest interval of a given length;
- `faults`: how many times each failure was inflicted (`drop`, `error`, `store_then_fail`,
  `slow`).

It is safe to read from another thread while the sandbox records (one lock guards both).
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import Any

DROPPED = 0  # the status recorded for a connection closed without an answer


def max_in_window(times: Sequence[float], seconds: float) -> int:
    """The most of `times` (ascending) that fall in any half-open interval of `seconds`.

    That is the largest `j - i + 1` with `times[j] - times[i] < seconds`: the number a sliding
    window of that length would have counted at its fullest.
    """
    most = 0
    start = 0
    for end, time in enumerate(times):
        while time - times[start] >= seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


class SandboxStats:
    """Counts of answers and the arrival times of admitted requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: Counter[tuple[str, str, int]] = Counter()
        self.faults: Counter[str] = Counter()
        self.admitted_times: array[float] = array("d")
        self.throttled = 0

    def admit(self, now: float) -> None:
        """Note the arrival of a request that the rate limit let through."""
        with self._lock:
            self.admitted_times.append(now)

    def answer(self, method: str, route: str, status: int) -> None:
        """Note one answer (status `DROPPED` for none)."""
        with self._lock:
            self.responses[(method, route, status)] += 1
            if status == 429:
                self.throttled += 1

    def inflict(self, fault: str) -> None:
        """Note one failure inflicted on purpose."""
        with self._lock:
            self.faults[fault] += 1

    def count(
        self, method: str | None = None, route: str | None = None, status: int | None = None
    ) -> int:
        """How many answers match every criterion given (None matches anything)."""
        with self._lock:
            items = list(self.responses.items())
        return sum(
            number
            for (m, r, s), number in items
            if (method is None or m == method)
            and (route is None or r == route)
            and (status is None or s == status)
        )

    def max_admitted_in(self, seconds: float) -> int:
        """The most admitted requests in any interval of `seconds`."""
        with self._lock:
            times = array("d", self.admitted_times)
        return max_in_window(times, seconds)

    def to_json(self, *, with_times: bool = False) -> dict[str, Any]:
        """A JSON-ready snapshot; the arrival times only if asked (they can be many)."""
        with self._lock:
            snapshot: dict[str, Any] = {
                "responses": [
                    {"method": m, "route": r, "status": s, "count": number}
                    for (m, r, s), number in sorted(self.responses.items())
                ],
                "throttled": self.throttled,
                "admitted": len(self.admitted_times),
                "faults": dict(sorted(self.faults.items())),
            }
            if with_times:
                snapshot["admitted_times"] = list(self.admitted_times)
        return snapshot

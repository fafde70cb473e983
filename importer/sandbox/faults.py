"""Misbehaviour on demand: the failures a real API shows now and then, at chosen rates.

`Faults` says how often each failure happens; `FaultDice` decides, request by request, which
of them befall it. The dice are a `random.Random` seeded from `Faults.seed`, and every request
draws the same number of values in the same order, so a run that sends the same requests in
the same order meets the same failures. (With concurrent clients the arrival order itself
varies, so the failures land on different rows; their number stays close to the rates.)

What each failure does, in the order the sandbox applies them:

    latency               every request waits this long before it is handled
    write_latency         (writing an activity: POST, PUT, DELETE) waits this long more
    drop_rate             the connection is closed without an answer; nothing is stored
    error_rate            500 before anything is done; nothing is stored
    store_then_fail_rate  (writing an activity: POST, PUT, DELETE) the write IS done, then 500
    slow_rate             the request is handled at once but answered `slow_seconds` late

    post_error_rate       (creating an activity only) 500 before anything is done
    read_error_rate       (listing a contact's activities only) 500
    read_throttle_rate    (listing a contact's activities only) 429, `Retry-After: 1`

A dropped request wins over an error, an error over the targeted faults (post, read), those
over store-then-fail; slowness can come on top of any answer. The targeted faults roll dice
of their own, so setting them leaves the other faults' sequence as it was.

Failures strike only requests that were admitted by the rate limit and
carried a valid API key, so a wrong key is always answered 401 and a 429 is never hidden.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Faults:
    """How often the sandbox misbehaves. The default is a sandbox that never does."""

    error_rate: float = 0.0
    """Share of requests answered 500 before anything is done (0 to 1)."""

    store_then_fail_rate: float = 0.0
    """Share of activity writes (creations, updates, deletions) that are done and then
    answered 500: the ambiguous case where the client sees a failure but a blind retry of a
    creation would make a duplicate (0 to 1)."""

    drop_rate: float = 0.0
    """Share of requests whose connection is closed without any answer (0 to 1)."""

    latency: float = 0.0
    """Seconds every request waits before it is handled (an asyncio sleep, not blocking)."""

    write_latency: float = 0.0
    """Seconds every activity write (POST, PUT, DELETE) waits on top of `latency`: slow
    writes behind quick reads (the key check, lookups)."""

    slow_rate: float = 0.0
    """Share of requests answered `slow_seconds` late, to make clients time out (0 to 1)."""

    slow_seconds: float = 60.0
    """How late a slow answer is."""

    post_error_rate: float = 0.0
    """Share of activity creations answered 500 before anything is stored (0 to 1): the
    writes fail while the reads work."""

    read_error_rate: float = 0.0
    """Share of activity list pages (`GET …/activities`) answered 500 (0 to 1)."""

    read_throttle_rate: float = 0.0
    """Share of activity list pages answered 429 with `Retry-After: 1` (0 to 1)."""

    seed: int = 0
    """Seed of the dice: the same seed gives the same failures to the same request order."""

    def __post_init__(self) -> None:
        rates = ("error_rate", "store_then_fail_rate", "drop_rate", "slow_rate")
        targeted = ("post_error_rate", "read_error_rate", "read_throttle_rate")
        for name in (*rates, *targeted):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        for name in ("latency", "write_latency", "slow_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True)
class RequestFaults:
    """What befalls one request."""

    drop: bool = False
    error: bool = False
    store_then_fail: bool = False
    slow: bool = False


class FaultDice:
    """Rolls the failures of each request in turn, reproducibly from the seed."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._targeted = random.Random(f"{faults.seed}/targeted")

    def roll(self) -> RequestFaults:
        """The failures of the next request. Always draws four values, whatever the rates."""
        drop, error, store_then_fail, slow = (self._random.random() for _ in range(4))
        faults = self.faults
        dropped = drop < faults.drop_rate
        failed = not dropped and error < faults.error_rate
        return RequestFaults(
            drop=dropped,
            error=failed,
            store_then_fail=not dropped
            and not failed
            and store_then_fail < faults.store_then_fail_rate,
            slow=slow < faults.slow_rate,
        )

    def roll_post(self) -> bool:
        """Whether the next activity creation is answered 500 before it is stored."""
        return self._targeted.random() < self.faults.post_error_rate

    def roll_read(self) -> int | None:
        """The status the next activity list page is answered with instead: 500, 429 or
        None (answered as usual). Always draws one value."""
        draw = self._targeted.random()
        if draw < self.faults.read_error_rate:
            return 500
        if draw < self.faults.read_error_rate + self.faults.read_throttle_rate:
            return 429
        return None

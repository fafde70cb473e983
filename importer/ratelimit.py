"""The rate limit: requests spaced evenly in time, shared by every worker of a run.

What `RateLimit` promises:

- **No bursts.** Successive grants of `acquire()` are at least `1 / rate` seconds apart (by
  the event loop's clock). So in any window of W seconds, [t, t + W), at most
  ceil(W * rate) requests start: 480/min never lets a 481st request start within 60 s,
  nor a 9th within one second. The spacing is aiolimiter's leaky bucket holding one
  request, `AsyncLimiter(1, 1 / rate)`: `AsyncLimiter(480, 60)` would let 480 go at once
  (a bucket of N lets N go together), a bucket of one cannot.
- **Pauses are for everyone.** `pause_for()` / `pause_until()` hold back every waiter
  until the pause ends; a longer pause set while waiting is honoured.
- **It only gets slower by itself.** `slow_down()` lowers the rate for the rest of the
  run; `observe_response()` calls it when 429s are more than rare (`SLOW_DOWN_AFTER` 429s
  among the last `RESPONSE_WINDOW` answers), then starts counting afresh, leaving out
  429s to requests sent before the slow-down.
- **It follows `X-RateLimit-*` headers when they appear.** With `Remaining` requests left
  until `Reset`, it spreads them evenly over that time (keeping one back for a request
  already in flight) whenever that is slower than its own rate, and pauses until `Reset`
  when none are left. `Reset` is read as seconds from now, or as a Unix time when it is
  larger than 10**9.
- Waiters are served first come, first served.

What it does not promise: it limits when requests *start*, as this process sees them. It
cannot know about other programs using the same key, and network jitter can bring
requests to the server closer together than they left; that is why the default rate is a
little under the documented 500/min. It counts nothing on the server's behalf.

How it is built: the steady spacing at the run's own rate is the bucket's; everything
adaptive is this module's, on top: before a request takes its turn in the bucket it waits
out any pause and any spacing the headers ask for, and if a pause came while it waited in
the bucket it waits again and takes a fresh turn (so the grant is always a turn of the
bucket). aiolimiter cannot change a bucket's rate (its rate is fixed when it is built), so
a slow-down builds a new bucket, and holds the next request back until one new interval
after the last grant, which the new, empty bucket does not know of.

It prints nothing: changes of pace are told to `on_notice` as one plain line.
The bucket reads the running loop's clock (`loop.time()`), so tests run on virtual time by
giving the loop a virtual clock; `clock` and `sleep`, when given, must keep the same time.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from aiolimiter import AsyncLimiter
from multidict import CIMultiDict, CIMultiDictProxy

from importer.errors import ConfigError

DEFAULT_RATE = "480/min"  # a little under the documented 500/min
"""The default rate, as the user writes it."""

SLOW_DOWN_FACTOR = 0.75  # each slow-down keeps this share of the rate
MIN_RATE = 0.1  # requests per second; slow-downs never go below this (6/min)
RESPONSE_WINDOW = 100  # answers remembered to judge whether 429s are rare
SLOW_DOWN_AFTER = 2  # this many 429s among them is "more than rare"
MAX_RESET_SECONDS = 86_400.0  # an X-RateLimit-Reset further away than a day is ignored
_UNIX_TIME_THRESHOLD = 1e9  # a Reset above this is a Unix time, not seconds from now

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*", re.IGNORECASE)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
NoticeCallback = Callable[[str], None]


def parse_rate(text: str) -> float:
    """Read a rate such as `480/min`, `8/s` or `3000/h`; give requests per second.

    Units: `s`, `sec`, `second`, `min`, `minute`, `h`, `hour` (any case). The count must be
    a positive number. Anything else raises `ConfigError` with one line saying what is
    accepted.
    """
    match = _RATE_PATTERN.fullmatch(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ConfigError(f"rate {text!r} is not understood: write N/s, N/min or N/h, e.g. 480/min")
    count = float(match.group(1))
    if count <= 0:
        raise ConfigError(f"rate {text!r} must allow at least some requests")
    return count / unit


DEFAULT_RATE_PER_SECOND = parse_rate(DEFAULT_RATE)


def describe_rate(per_second: float) -> str:
    """A rate in the words a person reads: `480/min`, or `8.5/min` below ten a minute."""
    per_minute = per_second * 60
    return f"{per_minute:.0f}/min" if per_minute >= 10 else f"{per_minute:.1f}/min"


class RateLimit:
    """Spaces requests evenly at `rate` per second; see the module docstring for promises."""

    def __init__(
        self,
        rate: float,
        *,
        on_notice: NoticeCallback | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        """`rate` in requests per second. `clock` defaults to the running loop's time and
        `sleep` to `asyncio.sleep`; both are read only when needed, never at construction
        (nor is the loop: the bucket finds it at its first use)."""
        if not rate > 0:
            raise ConfigError("the rate must be a positive number of requests per second")
        self._rate = float(rate)
        self._on_notice = on_notice
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._lock = asyncio.Lock()
        self._bucket = AsyncLimiter(1, 1 / self._rate)
        self._last_grant = -math.inf
        self._held_until = -math.inf  # after a slow-down: the new bucket's first turn
        self._paused_until = -math.inf
        self._header_interval = 0.0  # spacing asked for by X-RateLimit-* headers...
        self._header_until = -math.inf  # ...until this loop time
        self._recent_429s: deque[bool] = deque(maxlen=RESPONSE_WINDOW)
        self._slowed_at = -math.inf  # loop time of the last slow-down

    def __repr__(self) -> str:
        return f"RateLimit({describe_rate(self._rate)})"

    @property
    def rate(self) -> float:
        """The run's own rate now, in requests per second (after any slow-downs)."""
        return self._rate

    def now(self) -> float:
        """The limiter's clock: the running loop's time unless another was given."""
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    async def wait(self, seconds: float) -> None:
        """Sleep on the limiter's clock (the sender's backoff uses this, so tests need no
        real time). It holds back nobody else."""
        await self._sleep(max(seconds, 0.0))

    async def acquire(self) -> float:
        """Wait for this request's turn: no pause in force, and one interval since the last.
        Gives the loop time of the grant (pass it back to `observe_response`)."""
        async with self._lock:  # first come, first served, one at a time at the bucket
            while True:
                await self._wait_until_ready()
                await self._bucket.acquire()
                now = self.now()
                if self._ready_at(now) <= now:  # no pause came while it waited its turn
                    break
            self._last_grant = now
            return now

    async def _wait_until_ready(self) -> None:
        while (ready_at := self._ready_at(now := self.now())) > now:
            await self._sleep(ready_at - now)

    def _ready_at(self, now: float) -> float:
        """When the adaptive layer lets the next request go: after any pause, the spacing
        the headers ask for, and a slow-down's hold."""
        ready_at = max(self._paused_until, self._held_until)
        if self._header_until > now:
            ready_at = max(ready_at, self._last_grant + self._header_interval)
        return ready_at

    def pause_until(self, when: float, reason: str = "") -> None:
        """Hold back every request until loop time `when` (never shortens a pause)."""
        if when <= self._paused_until:
            return
        now = self.now()
        if self._paused_until <= now or when - self._paused_until >= 1.0:
            self._notice(
                f"all requests paused for {_seconds(when - now)}"
                + (f": {reason}" if reason else "")
            )
        self._paused_until = when

    def pause_for(self, seconds: float, reason: str = "") -> None:
        """Hold back every request for `seconds` from now (never shortens a pause)."""
        self.pause_until(self.now() + max(seconds, 0.0), reason)

    def slow_down(self, reason: str = "") -> None:
        """Lower the rate to `SLOW_DOWN_FACTOR` of itself (not below `MIN_RATE`) for the
        rest of the run, and say so."""
        slower = max(self._rate * SLOW_DOWN_FACTOR, MIN_RATE)
        self._slowed_at = self.now()
        self._recent_429s.clear()
        if slower >= self._rate:
            return
        self._rate = slower
        self._bucket = AsyncLimiter(1, 1 / slower)
        self._held_until = self._last_grant + 1 / slower
        because = f" ({reason})" if reason else ""
        self._notice(f"slowing to {describe_rate(slower)} for the rest of the run{because}")

    def observe_response(
        self, status: int, headers: Mapping[str, str], sent_at: float | None = None
    ) -> None:
        """Learn from one answer: count 429s (slowing down when they are not rare) and
        follow any `X-RateLimit-*` headers.

        `sent_at` is the grant time `acquire()` gave for the request. A 429 to a request
        sent before the last slow-down is not counted: it tells nothing about the new pace
        (so eight workers hit by one burst slow the run once, not four times).
        """
        if not (status == 429 and sent_at is not None and sent_at < self._slowed_at):
            self._recent_429s.append(status == 429)
        if status == 429 and sum(self._recent_429s) >= SLOW_DOWN_AFTER:
            self.slow_down(
                f"{SLOW_DOWN_AFTER} or more '429 Too Many Requests' in the last "
                f"{len(self._recent_429s)} answers"
            )
        self.observe_headers(headers)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Follow `X-RateLimit-Remaining` and `X-RateLimit-Reset` when both are present and
        are numbers; other headers and unreadable values are ignored."""
        if not isinstance(headers, CIMultiDictProxy | CIMultiDict):  # aiohttp's are already
            headers = CIMultiDict(headers)
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        until_reset = _seconds_until(_number(headers.get("X-RateLimit-Reset")))
        if remaining is None or until_reset is None:
            return
        now = self.now()
        usable = math.floor(remaining) - 1  # one may be in flight already
        if usable <= 0:
            self.pause_until(now + until_reset, "the API says no requests are left until then")
            return
        interval = until_reset / usable
        governing = self._header_until > now and self._header_interval > 1 / self._rate
        self._header_interval, self._header_until = interval, now + until_reset
        if interval > 1 / self._rate and not governing:
            self._notice(
                f"the API allows {int(remaining)} more requests in the next"
                f" {_seconds(until_reset)}: slowing to {describe_rate(1 / interval)} until then"
            )

    def _notice(self, line: str) -> None:
        if self._on_notice is not None:
            self._on_notice(line)


def _seconds(seconds: float) -> str:
    """`0.4 s`, `7 s`, `42 s`: whole seconds from ten on, tenths below."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{round(seconds, 1):g} s"


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _seconds_until(reset: float | None) -> float | None:
    if reset is None:
        return None
    seconds = reset - time.time() if reset > _UNIX_TIME_THRESHOLD else reset
    return seconds if 0 < seconds <= MAX_RESET_SECONDS else None

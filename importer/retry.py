"""When to try a request again, and how long to wait first.

- Retryable answers: 408, 429, 500, 502, 503, 504 (`is_retryable_status`). Everything else
  the API says is final.
- The wait before attempt n + 1 is exponential backoff with *full jitter*: a uniform
  random time between 0 and min(`max_delay`, `base_delay` * 2 ** (n - 1)), so workers that
  failed together do not come back together.
- When the answer carried `Retry-After`, the wait is max(Retry-After, backoff):
  the server's word is a floor, never shortened.
- `parse_retry_after` reads both forms of the header (delta-seconds and HTTP-date), never
  gives a negative wait and caps absurd ones.
"""

from __future__ import annotations

import email.utils
import random
import re
from dataclasses import dataclass
from datetime import UTC

from importer.errors import ConfigError

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 3600.0  # the longest documented window is an hour (besides the day)
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_MAX_EXPONENT = 60  # 2**60 is beyond any max_delay; keeps the float finite


def is_retryable_status(status: int) -> bool:
    """True for the answers worth another attempt: 408, 429, 500, 502, 503, 504."""
    return status in RETRYABLE_STATUSES


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often to try a request and how long to wait between tries."""

    max_attempts: int = 5
    """Tries in all, the first one included (1 means never retry)."""

    base_delay: float = 0.5
    """Seconds: the ceiling of the first backoff; it doubles with each attempt."""

    max_delay: float = 30.0
    """Seconds: the ceiling never grows past this."""

    max_retry_after: float = MAX_RETRY_AFTER
    """Seconds: a longer `Retry-After` is cut to this (then tried again)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ConfigError("retry delays must not be negative")

    def allows_another(self, attempts: int) -> bool:
        """True while `attempts` tries made so far leave room for one more."""
        return attempts < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt number `attempt` (1 for the first): uniform in
        [0, min(max_delay, base_delay * 2 ** (attempt - 1))]."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        ceiling = min(self.max_delay, self.base_delay * 2.0**exponent)
        return rng.uniform(0.0, ceiling)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before the next attempt: max(Retry-After, backoff)."""
        return max(retry_after or 0.0, self.backoff(attempt, rng))


def parse_retry_after(
    value: str | None, now: float, *, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait according to a `Retry-After` header value, or None if unreadable.

    `value` is delta-seconds (`"120"`) or an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`);
    `now` is the Unix time the answer came (`time.time()`). A date in the past gives 0;
    any wait is cut to `cap`.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), cap)

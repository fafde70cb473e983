"""The retry policy: which answers are retried, the backoff, and Retry-After."""

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from importer.errors import ConfigError
from importer.retry import RetryPolicy, is_retryable_status, parse_retry_after

NOW = 1_700_000_000.0  # a fixed Unix time


def http_date(seconds_from_now: float) -> str:
    when = datetime.fromtimestamp(NOW + seconds_from_now, tz=UTC)
    return format_datetime(when, usegmt=True)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 201, 301, 400, 401, 403, 404, 409, 422, 501])
def test_other_statuses_are_final(status):
    assert not is_retryable_status(status)


def test_defaults_are_five_attempts_with_a_half_second_base():
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.max_delay) == (5, 0.5, 30.0)


def test_policy_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        RetryPolicy().max_attempts = 2  # type: ignore[misc]


def test_policy_refuses_nonsense():
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(base_delay=-1)


def test_attempts_allowed_up_to_max_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.allows_another(n) for n in (1, 2, 3)] == [True, True, False]


def test_backoff_is_full_jitter_under_a_doubling_ceiling():
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (50, 30.0)]:
        waits = [policy.backoff(attempt, rng) for _ in range(500)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        # full jitter: spread over the whole range, not bunched near the ceiling
        assert min(waits) < ceiling * 0.1
        assert max(waits) > ceiling * 0.9


def test_backoff_is_deterministic_for_a_seed():
    policy = RetryPolicy()
    first = [policy.backoff(n, random.Random(7)) for n in range(1, 6)]
    again = [policy.backoff(n, random.Random(7)) for n in range(1, 6)]
    assert first == again


def test_backoff_survives_huge_attempt_numbers():
    assert 0 <= RetryPolicy(max_delay=10).backoff(10_000, random.Random(0)) <= 10


def test_delay_is_at_least_retry_after():
    policy = RetryPolicy(base_delay=0.5, max_delay=1.0)
    rng = random.Random(3)
    assert all(policy.delay(1, rng, retry_after=7.0) == 7.0 for _ in range(100))
    assert 0 <= policy.delay(1, rng, retry_after=None) <= 0.5


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("5", 5.0), (" 120 ", 120.0)])
def test_retry_after_in_seconds(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_as_an_http_date():
    assert parse_retry_after(http_date(30), NOW) == pytest.approx(30.0)


def test_retry_after_date_in_the_past_is_zero():
    assert parse_retry_after(http_date(-3600), NOW) == 0.0


def test_retry_after_is_capped():
    assert parse_retry_after("999999", NOW, cap=60.0) == 60.0
    assert parse_retry_after(http_date(10 * 86400), NOW, cap=60.0) == 60.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1e3", "Wed, 99 Foo 2015"])
def test_unreadable_retry_after_is_none(value):
    assert parse_retry_after(value, NOW) is None


def test_retry_after_date_against_the_real_clock():
    now = time.time()
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 88 <= parse_retry_after(later, now) <= 90

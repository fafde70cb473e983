"""The rate limit, on virtual time: spacing, pauses, slowing down, X-RateLimit headers."""

import asyncio
import bisect
import contextlib
import itertools
import math
import time

import pytest

from importer.errors import ConfigError
from importer.ratelimit import (
    DEFAULT_RATE,
    DEFAULT_RATE_PER_SECOND,
    MIN_RATE,
    SLOW_DOWN_FACTOR,
    RateLimit,
    parse_rate,
)

EPSILON = 1e-9


class FakeClock:
    """Virtual time, and the running loop's own clock while a test runs (the limiter's
    bucket, aiolimiter's, reads `loop.time()` and sleeps with `loop.call_at`): when the
    loop would wait for a timer, the clock jumps to it instead. `sleep` lets other tasks
    run once, then moves the clock on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.while_asleep = []  # callables run once, during the next sleep or jump

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        while self.while_asleep:
            self.while_asleep.pop(0)()
        self.now += seconds

    @contextlib.contextmanager
    def driving(self, loop: asyncio.AbstractEventLoop):
        """Make this the clock of `loop`, which must do no real I/O meanwhile."""
        selector = loop._selector
        select = selector.select

        def jump_to_the_next_timer(timeout=None):
            if not loop._ready:  # the loop would wait for a timer
                # At least a tick, as a real clock: aiolimiter's bucket may find a rounding
                # error's worth of a request left when it wakes, and wait "until now".
                self.advance(max(timeout or 0.0, 1e-12, 2 * math.ulp(self.now)))
            return select(0)

        loop.time = self.time
        selector.select = jump_to_the_next_timer
        try:
            yield self
        finally:
            del loop.time
            del selector.select


@pytest.fixture
async def clock():
    fake = FakeClock()
    with fake.driving(asyncio.get_running_loop()):
        yield fake


def limiter_on(clock, rate, notices=None):
    on_notice = notices.append if notices is not None else None
    return RateLimit(rate, clock=clock.time, sleep=clock.sleep, on_notice=on_notice)


async def grant_times(limiter, clock, count, *, tasks=16):
    """Acquire `count` times from `tasks` concurrent tasks; give the sorted grant times."""
    times = []
    remaining = iter(range(count))

    async def worker():
        for _ in remaining:
            await limiter.acquire()
            times.append(clock.now)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return sorted(times)


def most_in_any_window(times, window):
    """The largest number of times in any half-open window [t, t + window)."""
    return max(bisect.bisect_left(times, t + window - EPSILON) - i for i, t in enumerate(times))


# -- parse_rate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("480/min", 8.0),
        ("8/s", 8.0),
        ("8/sec", 8.0),
        ("3000/h", 3000 / 3600),
        ("3000/hour", 3000 / 3600),
        ("60/minute", 1.0),
        (" 120 / MIN ", 2.0),
        ("0.5/s", 0.5),
    ],
)
def test_parse_rate_accepts_counts_per_unit(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "text", ["", "480", "480/day", "fast", "/min", "-5/min", "0/min", "8 per s"]
)
def test_parse_rate_refuses_anything_else_with_a_config_error(text):
    with pytest.raises(ConfigError) as caught:
        parse_rate(text)
    assert "\n" not in str(caught.value)


def test_default_rate_is_a_little_under_the_documented_500_per_minute():
    assert DEFAULT_RATE == "480/min"
    assert DEFAULT_RATE_PER_SECOND == 8.0


def test_rate_must_be_positive():
    with pytest.raises(ConfigError):
        RateLimit(0)


# -- spacing -------------------------------------------------------------------------------


async def test_first_request_goes_at_once(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    assert clock.now == 0.0


async def test_requests_are_spaced_by_one_interval(clock):
    times = await grant_times(limiter_on(clock, 8.0), clock, 50)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.125 - EPSILON
    assert times[-1] == pytest.approx(49 * 0.125)  # and no slower than that


@pytest.mark.parametrize("rate_text", ["480/min", "500/min", "7/s", "3000/h"])
async def test_no_window_ever_sees_more_than_the_rate(clock, rate_text):
    rate = parse_rate(rate_text)
    times = await grant_times(limiter_on(clock, rate), clock, 1500)
    assert most_in_any_window(times, 1.0) <= max(1, -(-rate // 1))
    assert most_in_any_window(times, 60.0) <= round(rate * 60)


async def test_waiters_are_served_in_arrival_order(clock):
    limiter = limiter_on(clock, 1.0)
    order = []

    async def one(name):
        await limiter.acquire()
        order.append(name)

    await asyncio.gather(*(one(name) for name in "abcde"))
    assert order == list("abcde")


async def test_a_cancelled_waiter_holds_nobody_back(clock):
    limiter = limiter_on(clock, 1.0)
    await limiter.acquire()
    stuck = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    await limiter.acquire()
    assert clock.now == pytest.approx(1.0)


async def test_spacing_holds_on_the_real_loop_clock():
    limiter = RateLimit(200.0)  # 5 ms apart
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(loop.time())
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.005 - 1e-6


# -- pauses --------------------------------------------------------------------------------


async def test_pause_holds_back_every_waiter(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    limiter.pause_for(5.0)
    times = await grant_times(limiter, clock, 4, tasks=4)
    assert times[0] == pytest.approx(5.0)
    assert times == pytest.approx([5.0, 5.125, 5.25, 5.375])


async def test_a_pause_set_while_waiting_is_honoured(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    clock.while_asleep.append(lambda: limiter.pause_for(10.0))
    await limiter.acquire()  # was due at 0.125; the pause came while it slept
    assert clock.now == pytest.approx(10.0)


async def test_a_pause_is_never_shortened(clock):
    limiter = limiter_on(clock, 8.0)
    limiter.pause_for(10.0)
    limiter.pause_for(2.0)
    await limiter.acquire()
    assert clock.now == pytest.approx(10.0)


async def test_pause_until_a_loop_time(clock):
    limiter = limiter_on(clock, 8.0)
    clock.now = 100.0
    limiter.pause_until(103.5)
    await limiter.acquire()
    assert clock.now == pytest.approx(103.5)


async def test_a_pause_is_told_once_not_per_worker(clock):
    notices = []
    limiter = limiter_on(clock, 8.0, notices)
    for _ in range(8):  # eight workers got the same 429 together
        limiter.pause_for(30.0, "the API answered 429 Too Many Requests")
    assert notices == ["all requests paused for 30 s: the API answered 429 Too Many Requests"]


async def test_wait_sleeps_on_the_limiters_clock_without_holding_others(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.wait(2.5)
    assert clock.now == pytest.approx(2.5)
    await limiter.acquire()
    assert clock.now == pytest.approx(2.5)


# -- slowing down --------------------------------------------------------------------------


async def test_slow_down_lowers_the_rate_for_the_rest_of_the_run(clock):
    notices = []
    limiter = limiter_on(clock, 8.0, notices)
    limiter.slow_down("testing")
    assert limiter.rate == pytest.approx(8.0 * SLOW_DOWN_FACTOR)
    times = await grant_times(limiter, clock, 20)
    assert most_in_any_window(times, 1.0) <= 6
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1 / 6 - EPSILON
    assert notices == ["slowing to 360/min for the rest of the run (testing)"]


def test_slow_down_never_goes_below_the_floor(clock):
    limiter = limiter_on(clock, MIN_RATE * 1.1)
    for _ in range(10):
        limiter.slow_down()
    assert limiter.rate == pytest.approx(MIN_RATE)


def test_a_single_429_in_a_hundred_answers_does_not_slow_down(clock):
    limiter = limiter_on(clock, 8.0)
    limiter.observe_response(429, {})
    for _ in range(99):
        limiter.observe_response(201, {})
    limiter.observe_response(429, {})  # the first one has left the window
    assert limiter.rate == 8.0


def test_two_429s_in_a_hundred_answers_slow_down_once(clock):
    notices = []
    limiter = limiter_on(clock, 8.0, notices)
    limiter.observe_response(429, {})
    for _ in range(50):
        limiter.observe_response(201, {})
    limiter.observe_response(429, {})
    assert limiter.rate == pytest.approx(6.0)
    limiter.observe_response(429, {})  # counting starts afresh after a slow-down
    assert limiter.rate == pytest.approx(6.0)
    limiter.observe_response(429, {})
    assert limiter.rate == pytest.approx(4.5)
    assert len(notices) == 2
    assert "429" in notices[0]


async def test_a_burst_of_429s_sent_before_a_slow_down_slows_once(clock):
    limiter = limiter_on(clock, 8.0)
    sent = [await limiter.acquire() for _ in range(8)]  # eight workers, all in flight
    for sent_at in sent:  # and all answered 429 by a server that was full
        limiter.observe_response(429, {}, sent_at)
    assert limiter.rate == pytest.approx(6.0)
    later = [await limiter.acquire() for _ in range(2)]  # sent at the new pace: they count
    for sent_at in later:
        limiter.observe_response(429, {}, sent_at)
    assert limiter.rate == pytest.approx(4.5)


async def test_acquire_gives_the_grant_time(clock):
    limiter = limiter_on(clock, 4.0)
    assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.25, 0.5]


# -- X-RateLimit-* headers -----------------------------------------------------------------


def rate_headers(remaining, reset, limit=60):
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }


async def test_few_remaining_are_spread_until_the_reset(clock):
    notices = []
    limiter = limiter_on(clock, 8.0, notices)
    await limiter.acquire()
    limiter.observe_headers(rate_headers(remaining=5, reset=10))
    times = [clock.now]
    for _ in range(4):
        await limiter.acquire()
        times.append(clock.now)
    # 5 left for 10 s, one kept back for a request in flight: 4 over 10 s
    assert times == pytest.approx([0.0, 2.5, 5.0, 7.5, 10.0])
    assert notices == [
        "the API allows 5 more requests in the next 10 s: slowing to 24/min until then"
    ]


async def test_the_own_rate_returns_after_the_reset(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    limiter.observe_headers(rate_headers(remaining=3, reset=4))
    await limiter.acquire()
    await limiter.acquire()
    assert clock.now == pytest.approx(4.0)
    await limiter.acquire()
    assert clock.now == pytest.approx(4.125)


async def test_plenty_remaining_changes_nothing(clock):
    notices = []
    limiter = limiter_on(clock, 8.0, notices)
    await limiter.acquire()
    limiter.observe_headers(rate_headers(remaining=490, reset=60, limit=500))
    await limiter.acquire()
    assert clock.now == pytest.approx(0.125)
    assert notices == []


async def test_none_remaining_pauses_until_a_unix_time_reset(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    limiter.observe_headers(rate_headers(remaining=0, reset=int(time.time()) + 30))
    await limiter.acquire()
    assert 28.5 <= clock.now <= 30.5


async def test_header_names_are_case_insensitive(clock):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    limiter.observe_headers({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "7"})
    await limiter.acquire()
    assert clock.now == pytest.approx(7.0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-RateLimit-Remaining": "3"},
        {"X-RateLimit-Remaining": "many", "X-RateLimit-Reset": "10"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "-4"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "nan"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9999999"},  # > a day away
    ],
)
async def test_missing_or_unreadable_headers_are_ignored(clock, headers):
    limiter = limiter_on(clock, 8.0)
    await limiter.acquire()
    limiter.observe_headers(headers)
    await limiter.acquire()
    assert clock.now == pytest.approx(0.125)


async def test_following_a_fixed_window_server_never_runs_out(clock):
    """A server allowing 60 per fixed minute, saying so in its headers, answering at once:
    at 480/min of our own, the headers alone keep every minute at or under 60."""
    limiter = limiter_on(clock, 8.0)
    per_window: dict[int, int] = {}
    for _ in range(300):
        await limiter.acquire()
        window = int(clock.now // 60)
        per_window[window] = per_window.get(window, 0) + 1
        remaining = 60 - per_window[window]
        limiter.observe_headers(rate_headers(remaining, (window + 1) * 60 - clock.now))
    assert max(per_window.values()) <= 60
    assert min(per_window[w] for w in list(per_window)[:-1]) >= 50  # and uses most of it

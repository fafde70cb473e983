"""The sandbox misbehaves on demand: rate limits, 500s, stored-then-500s, drops, slowness.

Timing is only ever checked from below or against the sandbox's own record of arrivals,
never to a tight tolerance: the machine running the tests may be slow and noisy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from importer.payload import ActivityPayload, ActivityType
from importer.sandbox import (
    Faults,
    RateWindow,
    Sandbox,
    SandboxSettings,
    max_in_window,
    running_sandbox,
)
from importer.sandbox.faults import FaultDice
from importer.sandbox.stats import DROPPED

LIVE = 10001
CREATE = "/v1/contacts/{contact}/activities"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def settings(*, limits: tuple[RateWindow, ...] = (), **faults: Any) -> SandboxSettings:
    return SandboxSettings(limits=limits, faults=Faults(**faults), contacts=20)


async def post(
    http: aiohttp.ClientSession, sandbox: Sandbox, **kwargs: Any
) -> aiohttp.ClientResponse:
    """POST a note for contact 10001; the response is read and released."""
    async with http.post(
        f"{sandbox.base_url}/contacts/{LIVE}/activities",
        json={"type": "note"},
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
        **kwargs,
    ) as response:
        await response.read()
        return response


async def get(
    http: aiohttp.ClientSession, sandbox: Sandbox, key: str | None = None
) -> aiohttp.ClientResponse:
    async with http.get(
        f"{sandbox.base_url}/contacts",
        headers={"Authorization": f"Bearer {key or sandbox.api_key}"},
    ) as response:
        await response.read()
        return response


# -- faults --------------------------------------------------------------------------------


async def test_error_rate_one_answers_500_and_stores_nothing(http):
    async with running_sandbox(settings(error_rate=1.0)) as sandbox:
        response = await post(http, sandbox)
        assert response.status == 500
        assert sandbox.store.count_activities() == 0
        assert sandbox.stats.faults["error"] == 1


async def test_errors_strike_reads_too(http):
    async with running_sandbox(settings(error_rate=1.0)) as sandbox:
        assert (await get(http, sandbox)).status == 500


async def test_store_then_fail_stores_the_activity_and_answers_500(http):
    async with running_sandbox(settings(store_then_fail_rate=1.0)) as sandbox:
        response = await post(http, sandbox)
        assert response.status == 500
        assert sandbox.store.count_activities(LIVE) == 1
        assert sandbox.stats.faults["store_then_fail"] == 1


async def test_a_dropped_connection_is_a_client_connection_error(http):
    async with running_sandbox(settings(drop_rate=1.0)) as sandbox:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(http, sandbox)
        assert sandbox.store.count_activities() == 0
        assert sandbox.stats.count(status=0) == 1


async def test_latency_delays_every_answer(http):
    async with running_sandbox(settings(latency=0.2)) as sandbox:
        started = time.monotonic()
        await get(http, sandbox)
        assert time.monotonic() - started >= 0.15


async def test_a_slow_answer_trips_a_client_timeout(http):
    async with running_sandbox(settings(slow_rate=1.0, slow_seconds=30.0)) as sandbox:
        with pytest.raises(TimeoutError):
            await post(http, sandbox, timeout=aiohttp.ClientTimeout(total=0.3))
        # The work was done at once; only the answer was late.
        assert sandbox.store.count_activities() == 1
    # Leaving the block did not wait the 30 seconds out (the test timeout would say so).


# PUT and DELETE meet the same faults; the activity is made in the store, past the dice.


async def write(
    http: aiohttp.ClientSession, sandbox: Sandbox, method: str, activity: str, **kwargs: Any
) -> aiohttp.ClientResponse:
    """PUT (a meeting) or DELETE activity `activity` of contact 10001."""
    body = {"json": {"type": "meeting", "subject": "Updated"}} if method == "PUT" else {}
    async with http.request(
        method,
        f"{sandbox.base_url}/contacts/{LIVE}/activities/{activity}",
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
        **body,
        **kwargs,
    ) as response:
        await response.read()
        return response


def stored_note(sandbox: Sandbox) -> str:
    payload = ActivityPayload(type=ActivityType.NOTE, subject="Original")
    return sandbox.store.add_activity(LIVE, payload, now=datetime.now(UTC)).id


def written(sandbox: Sandbox, method: str, activity: str) -> bool:
    """Whether the PUT or DELETE of `activity` took effect in the store."""
    stored = sandbox.store.find_activity(activity)
    if method == "DELETE":
        return stored is None
    assert stored is not None
    return (stored.type, stored.subject) == ("meeting", "Updated")


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_store_then_fail_does_the_write_then_answers_500(http, method):
    async with running_sandbox(settings(store_then_fail_rate=1.0)) as sandbox:
        activity = stored_note(sandbox)
        assert (await write(http, sandbox, method, activity)).status == 500
        assert written(sandbox, method, activity)
        assert sandbox.stats.faults["store_then_fail"] == 1


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_an_error_before_a_write_leaves_the_activity_as_it_was(http, method):
    async with running_sandbox(settings(error_rate=1.0)) as sandbox:
        activity = stored_note(sandbox)
        assert (await write(http, sandbox, method, activity)).status == 500
        assert not written(sandbox, method, activity)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_dropped_write_is_a_connection_error_and_leaves_the_activity(http, method):
    async with running_sandbox(settings(drop_rate=1.0)) as sandbox:
        activity = stored_note(sandbox)
        with pytest.raises(aiohttp.ClientConnectionError):
            await write(http, sandbox, method, activity)
        assert not written(sandbox, method, activity)
        # aiohttp itself sends an idempotent request (PUT, DELETE) again once on a lost
        # connection: both tries were dropped.
        assert sandbox.stats.count(status=0) >= 1


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_latency_delays_writes_too(http, method):
    async with running_sandbox(settings(latency=0.2)) as sandbox:
        activity = stored_note(sandbox)
        started = time.monotonic()
        assert (await write(http, sandbox, method, activity)).status in (200, 204)
        assert time.monotonic() - started >= 0.15


async def test_write_latency_delays_activity_writes_and_not_reads(http):
    async with running_sandbox(settings(write_latency=0.3)) as sandbox:
        started = time.monotonic()
        await get(http, sandbox)
        read = time.monotonic() - started
        await post(http, sandbox)
        activity = stored_note(sandbox)
        assert (await write(http, sandbox, "PUT", activity)).status == 200
        written_in = time.monotonic() - started - read
    assert read < 0.25 and written_in >= 0.55  # the POST and the PUT waited, the GET not


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_slow_write_is_done_at_once_and_answered_late(http, method):
    async with running_sandbox(settings(slow_rate=1.0, slow_seconds=30.0)) as sandbox:
        activity = stored_note(sandbox)
        with pytest.raises(TimeoutError):
            await write(http, sandbox, method, activity, timeout=aiohttp.ClientTimeout(total=0.3))
        assert written(sandbox, method, activity)


async def test_faults_spare_requests_with_a_wrong_key(http):
    async with running_sandbox(settings(error_rate=1.0, drop_rate=1.0)) as sandbox:
        assert (await get(http, sandbox, key="wrong")).status == 401


async def list_page(http: aiohttp.ClientSession, sandbox: Sandbox) -> aiohttp.ClientResponse:
    async with http.get(
        f"{sandbox.base_url}/contacts/{LIVE}/activities",
        headers={"Authorization": f"Bearer {sandbox.api_key}"},
    ) as response:
        await response.read()
        return response


async def test_read_errors_strike_activity_list_pages_only(http):
    async with running_sandbox(settings(read_error_rate=1.0)) as sandbox:
        assert (await list_page(http, sandbox)).status == 500
        assert (await get(http, sandbox)).status == 200  # GET /contacts is spared
        assert (await post(http, sandbox)).status == 200  # and so are writes
        assert sandbox.stats.faults["read_error"] == 1


async def test_read_throttling_answers_429_with_retry_after(http):
    async with running_sandbox(settings(read_throttle_rate=1.0)) as sandbox:
        response = await list_page(http, sandbox)
        assert (response.status, response.headers["Retry-After"]) == (429, "1")


async def test_post_errors_store_nothing_and_spare_reads(http):
    async with running_sandbox(settings(post_error_rate=1.0)) as sandbox:
        assert (await post(http, sandbox)).status == 500
        assert sandbox.store.count_activities() == 0
        assert (await list_page(http, sandbox)).status == 200


def test_targeted_faults_leave_the_other_faults_sequence_alone():
    plain = FaultDice(Faults(error_rate=0.3, seed=7))
    targeted = FaultDice(Faults(error_rate=0.3, read_error_rate=0.5, seed=7))
    for _ in range(50):
        targeted.roll_read()
    assert [plain.roll() for _ in range(50)] == [targeted.roll() for _ in range(50)]


async def test_the_same_seed_rolls_the_same_faults():
    faults = Faults(error_rate=0.3, drop_rate=0.2, slow_rate=0.1, seed=7)
    first, second = FaultDice(faults), FaultDice(faults)
    assert [first.roll() for _ in range(50)] == [second.roll() for _ in range(50)]


async def test_fault_rates_are_roughly_kept():
    dice = FaultDice(Faults(error_rate=0.25, seed=1))
    errors = sum(dice.roll().error for _ in range(4000))
    assert 800 < errors < 1200


def test_a_rate_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)


# -- rate limits ---------------------------------------------------------------------------


async def test_over_the_limit_is_429_with_retry_after(http):
    async with running_sandbox(settings(limits=(RateWindow(5, 10.0),))) as sandbox:
        answers = await asyncio.gather(*(post(http, sandbox) for _ in range(8)))
        statuses = sorted(response.status for response in answers)
        assert statuses == [200] * 5 + [429] * 3
        refused = [r for r in answers if r.status == 429]
        assert all(1 <= int(r.headers["Retry-After"]) <= 10 for r in refused)
        assert sandbox.stats.throttled == 3
        assert sandbox.store.count_activities() == 5


async def test_reads_count_against_the_limit_too(http):
    async with running_sandbox(settings(limits=(RateWindow(2, 10.0),))) as sandbox:
        await get(http, sandbox)
        await get(http, sandbox)
        assert (await post(http, sandbox)).status == 429


async def test_admitted_requests_never_exceed_any_window(http):
    windows = (RateWindow(3, 0.1), RateWindow(8, 0.5))
    async with running_sandbox(settings(limits=windows)) as sandbox:
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            await asyncio.gather(*(get(http, sandbox) for _ in range(5)))
            await asyncio.sleep(0.12)
        times = list(sandbox.stats.admitted_times)
        assert sandbox.stats.throttled > 0
        assert len(times) >= 3
        assert max_in_window(times, 0.1) <= 3
        assert max_in_window(times, 0.5) <= 8
        assert sandbox.max_admitted_in(0.5) == max_in_window(times, 0.5)


async def test_a_client_that_keeps_knocking_while_refused_stays_refused(http):
    async with running_sandbox(settings(limits=(RateWindow(2, 0.2),))) as sandbox:
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            await get(http, sandbox)
        assert len(sandbox.stats.admitted_times) == 2


async def test_without_counting_refused_requests_a_knocking_client_gets_through(http):
    limited = SandboxSettings(limits=(RateWindow(2, 0.2),), count_refused=False, contacts=20)
    async with running_sandbox(limited) as sandbox:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            await get(http, sandbox)
        times = list(sandbox.stats.admitted_times)
        assert len(times) > 2
        assert max_in_window(times, 0.2) <= 2


async def test_rate_limit_headers_are_on_every_answer_when_asked(http):
    limited = SandboxSettings(limits=(RateWindow(2, 60.0),), rate_limit_headers=True, contacts=20)
    async with running_sandbox(limited) as sandbox:
        first = await get(http, sandbox)
        unauthorized = await get(http, sandbox, key="wrong")
        refused = await get(http, sandbox)
    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == (
        "2",
        "1",
    )
    assert unauthorized.status == 401 and unauthorized.headers["X-RateLimit-Remaining"] == "0"
    assert refused.status == 429 and "X-RateLimit-Reset" in refused.headers
    assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())


async def test_rate_limit_headers_are_absent_by_default(http):
    async with running_sandbox(settings(limits=(RateWindow(2, 60.0),))) as sandbox:
        response = await get(http, sandbox)
    assert "X-RateLimit-Limit" not in response.headers


async def test_the_stats_route_reports_the_busiest_interval_of_each_window(http):
    async with running_sandbox(settings(limits=(RateWindow(2, 60.0),))) as sandbox:
        for _ in range(3):
            await get(http, sandbox)
        async with http.get(sandbox.stats_url, params={"times": "1"}) as response:
            stats = await response.json()
    assert stats["windows"] == [{"limit": 2, "seconds": 60.0, "max_admitted": 2}]
    assert stats["throttled"] == 1
    assert len(stats["admitted_times"]) == 2


async def test_a_client_gone_before_its_body_came_is_a_dropped_request_not_a_traceback(caplog):
    """A client killed mid-request (the kill -9 tests do it): the sandbox stores nothing,
    counts the request dropped, and logs no "Error handling request" traceback."""
    async with running_sandbox(settings(latency=0.2)) as sandbox:
        host, port = sandbox.base_url.removeprefix("http://").split("/")[0].split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        path = f"/v1/contacts/{LIVE}/activities"
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {sandbox.api_key}\r\nContent-Length: 100\r\n\r\n"
            '{"type": "no'.encode()
        )
        await writer.drain()
        writer.close()  # gone while the sandbox waits out its latency
        await writer.wait_closed()
        deadline = time.monotonic() + 3
        while sandbox.stats.count(method="POST") == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert sandbox.stats.count(method="POST", status=DROPPED) == 1
        assert sandbox.store.count_activities() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

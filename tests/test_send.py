"""The sender, against aioresponses (and loopback for a refused connection)."""

import asyncio
import random
import re
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from multidict import CIMultiDict
from yarl import URL

from importer.errors import AuthError, ConfigError, ImporterError
from importer.payload import ActivityPayload
from importer.ratelimit import RateLimit
from importer.records import Status
from importer.retry import RetryPolicy
from importer.send import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    KEY_REFUSED,
    RequestFailed,
    Sender,
    SenderSettings,
    SendJob,
    check_base_url,
)

KEY = "gb_live_S3CRET-KEY-0123456789abcdef"
BASE = DEFAULT_BASE_URL
URL_42 = f"{BASE}/contacts/42/activities"
ANY_ACTIVITY_URL = re.compile(r"^https://api\.givebutter\.com/v1/contacts/\d+/activities$")
PAYLOAD = ActivityPayload(type="note", subject="Called about the gala")
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)


class FakeClock:
    """Virtual time for the limiter and the backoff: a sleep yields once, then jumps."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.now += seconds


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def api():
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def notices():
    return []


@pytest.fixture
def make_sender(session, clock, notices):
    def make(*, max_attempts=3, concurrency=4, base_url=BASE, limiter=None):
        settings = SenderSettings(
            base_url=base_url,
            rate=1000.0,
            max_attempts=max_attempts,
            concurrency=concurrency,
            retry=FAST,
        )
        limiter = limiter or RateLimit(
            settings.rate, clock=clock.time, sleep=clock.sleep, on_notice=notices.append
        )
        return Sender(session, KEY, settings, limiter=limiter, rng=random.Random(0))

    return make


LIST_42 = re.compile(r"^https://api\.givebutter\.com/v1/contacts/42/activities\?.*$")
EMPTY_PAGE = {"data": [], "links": {"next": None}, "meta": {"current_page": 1, "last_page": 1}}


def nothing_on_the_server(api):
    """The look before a second POST finds no activity: posting again is safe."""
    api.get(LIST_42, payload=EMPTY_PAGE, repeat=True)


def calls(api, method="POST", url=URL_42):
    return api.requests.get((method, URL(url)), [])


def http_date(seconds_from_now):
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


def free_loopback_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- settings and the base URL -------------------------------------------------------------


def test_settings_defaults():
    settings = SenderSettings()
    assert settings.base_url == "https://api.givebutter.com/v1"
    assert settings.rate == 8.0
    assert settings.concurrency == DEFAULT_CONCURRENCY == 8
    assert (settings.max_attempts, settings.timeout) == (5, 30.0)


def test_settings_are_keyword_only_frozen_and_replaceable():
    with pytest.raises(TypeError):
        SenderSettings("https://example.org")  # type: ignore[misc]
    settings = SenderSettings()
    with pytest.raises(AttributeError):
        settings.rate = 1.0  # type: ignore[misc]
    assert settings.replace(rate=2.0).rate == 2.0


def test_max_attempts_setting_governs_the_retry_policy():
    settings = SenderSettings(max_attempts=2, retry=RetryPolicy(max_attempts=9, base_delay=1))
    assert settings.retry_policy == RetryPolicy(max_attempts=2, base_delay=1)


@pytest.mark.parametrize(
    "changes", [{"rate": 0}, {"concurrency": 0}, {"max_attempts": 0}, {"timeout": 0}]
)
def test_settings_refuse_nonsense(changes):
    with pytest.raises(ConfigError):
        SenderSettings(**changes)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.givebutter.com/v1",
        "http://127.0.0.1:8000/v1",
        "http://127.5.6.7/v1",
        "http://localhost:9999",
        "http://[::1]:8080/v1",
    ],
)
def test_https_or_loopback_http_is_accepted(url):
    check_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.givebutter.com/v1",
        "http://10.0.0.1/v1",
        "http://127.0.0.1.example.com/v1",
        "http://localhost.example.com",
    ],
)
def test_plain_http_elsewhere_is_refused(url):
    with pytest.raises(ConfigError, match="plain http") as caught:
        check_base_url(url)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["ftp://api.givebutter.com", "api.givebutter.com/v1", "", "https://"]
)
def test_a_base_url_that_is_no_url_is_refused(url):
    with pytest.raises(ConfigError):
        check_base_url(url)


def test_a_refused_url_is_shown_without_its_password():
    with pytest.raises(ConfigError) as caught:
        check_base_url("http://user:hunter2@example.com/v1")
    assert "hunter2" not in str(caught.value)


async def test_the_sender_refuses_plain_http_to_a_real_host(session):
    with pytest.raises(ConfigError):
        Sender(session, KEY, SenderSettings(base_url="http://api.givebutter.com/v1"))


@pytest.mark.parametrize("key", ["", "   ", "abc def", "abc\ndef"])
async def test_the_sender_refuses_an_empty_or_malformed_key(session, key):
    with pytest.raises(ConfigError) as caught:
        Sender(session, key, SenderSettings())
    assert key.strip() == "" or key not in str(caught.value)


# -- one activity --------------------------------------------------------------------------


async def test_created_keeps_the_activity_id(api, make_sender):
    api.post(URL_42, status=200, payload={"id": "act_123", "type": "note"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert result.status is Status.CREATED
    assert (result.activity_id, result.http_status, result.attempts) == ("act_123", 200, 1)
    assert (result.error, result.ambiguous) == ("", False)


async def test_the_request_carries_the_key_the_body_and_no_redirects(api, make_sender):
    api.post(URL_42, status=200, payload={"id": "1"})
    await make_sender().create_activity(42, PAYLOAD)
    (call,) = calls(api)
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"
    assert call.kwargs["json"] == {"type": "note", "subject": "Called about the gala"}
    assert call.kwargs["allow_redirects"] is False


async def test_an_integer_id_is_kept_as_text(api, make_sender):
    api.post(URL_42, status=201, payload={"id": 987})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.activity_id) == (Status.CREATED, "987")


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 204},
        {"status": 200, "body": "<html>Down for maintenance</html>"},
        {"status": 200, "payload": {"type": "note"}},
        {"status": 200, "payload": {"id": ""}},
        {"status": 201, "payload": ["a1"]},
    ],
    ids=["204-empty", "200-html", "200-json-without-id", "200-blank-id", "201-list"],
)
async def test_a_2xx_without_an_activity_id_is_in_doubt_not_created(api, make_sender, answer):
    api.post(URL_42, **answer)
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.activity_id, result.ambiguous) == (Status.FAILED, None, True)
    assert result.error.startswith("in doubt: the API answered 2")
    assert "not sent again" in result.error
    assert len(calls(api)) == 1  # no second POST on a guess


async def test_422_field_errors_in_plain_words(api, make_sender):
    api.post(
        URL_42,
        status=422,
        payload={
            "message": "The subject field must not be greater than 255 characters. (and 1 more)",
            "errors": {
                "subject": ["The subject field must not be greater than 255 characters."],
                "type": ["The selected type is invalid."],
            },
        },
    )
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.http_status, result.attempts) == (Status.FAILED, 422, 1)
    assert result.error == (
        "subject: The subject field must not be greater than 255 characters.; "
        "type: The selected type is invalid."
    )
    assert not result.ambiguous


async def test_403_gives_the_status_and_the_api_message(api, make_sender):
    api.post(URL_42, status=403, payload={"message": "This action is unauthorized."})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.http_status) == (Status.FAILED, 403)
    assert result.error == "403 Forbidden: This action is unauthorized."
    assert len(calls(api)) == 1


async def test_404_gives_the_status_and_the_api_message(api, make_sender):
    api.post(URL_42, status=404, payload={"message": "Contact not found."})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert result.error == "404 Not Found: Contact not found."


async def test_a_session_that_raises_for_status_changes_nothing(api):
    api.post(URL_42, status=404, payload={"message": "Contact not found."})
    async with aiohttp.ClientSession(raise_for_status=True) as strict:
        sender = Sender(strict, KEY, SenderSettings(retry=FAST), rng=random.Random(0))
        result = await sender.create_activity(42, PAYLOAD)
    assert result.error == "404 Not Found: Contact not found."


async def test_an_html_error_page_is_not_quoted(api, make_sender):
    api.post(URL_42, status=400, body="<html><body>Bad</body></html>", content_type="text/html")
    result = await make_sender().create_activity(42, PAYLOAD)
    assert result.error == "400 Bad Request"


async def test_500_then_200_is_created_on_the_second_attempt(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, status=500, payload={"message": "Server Error"})
    api.post(URL_42, status=200, payload={"id": "a1"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.activity_id, result.attempts) == (Status.CREATED, "a1", 2)
    assert result.ambiguous  # the 500 may have created one too


async def test_500_every_time_fails_after_max_attempts(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, status=500, payload={"message": "Server Error"}, repeat=True)
    result = await make_sender(max_attempts=4).create_activity(42, PAYLOAD)
    assert (result.status, result.http_status, result.attempts) == (Status.FAILED, 500, 4)
    assert result.error.startswith("500 Internal Server Error: Server Error (after 4 attempts)")
    assert result.ambiguous and "may have been created" in result.error
    assert len(calls(api)) == 4


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_transient_statuses_are_retried(api, make_sender, status):
    nothing_on_the_server(api)
    api.post(URL_42, status=status)
    api.post(URL_42, status=200, payload={"id": "a1"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.attempts) == (Status.CREATED, 2)


async def test_retry_after_on_a_503_is_honoured(api, make_sender, clock):
    api.post(URL_42, status=503, headers={"Retry-After": "4"})
    api.post(URL_42, status=200, payload={"id": "a1"})
    await make_sender().create_activity(42, PAYLOAD)
    assert clock.now >= 4.0


async def test_429_with_retry_after_seconds_waits_and_retries(api, make_sender, clock, notices):
    api.post(URL_42, status=429, headers={"Retry-After": "7"})
    api.post(URL_42, status=200, payload={"id": "a1"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.attempts, result.ambiguous) == (Status.CREATED, 2, False)
    assert clock.now >= 7.0
    assert any("paused for 7 s" in line for line in notices)


async def test_429_with_retry_after_as_a_date_waits_and_retries(api, make_sender, clock):
    api.post(URL_42, status=429, headers={"Retry-After": http_date(20)})
    api.post(URL_42, status=200, payload={"id": "a1"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.attempts) == (Status.CREATED, 2)
    assert 18.0 <= clock.now <= 21.0


async def test_a_429_pauses_every_other_request(api, make_sender, clock):
    api.post(URL_42, status=429, headers={"Retry-After": "30"})
    sent_at = []

    def answer(url, **kwargs):
        sent_at.append(clock.now)
        return CallbackResult(status=200, payload={"id": "b"})

    api.post(f"{BASE}/contacts/7/activities", callback=answer)
    sender = make_sender(max_attempts=1)
    first = await sender.create_activity(42, PAYLOAD)  # not retried, yet everyone waits
    assert (first.status, first.http_status) == (Status.FAILED, 429)
    await sender.create_activity(7, PAYLOAD)
    assert sent_at[0] >= 30.0


async def test_429s_that_are_not_rare_slow_the_run_down(api, make_sender, notices):
    api.post(URL_42, status=429, headers={"Retry-After": "1"}, repeat=True)
    sender = make_sender(max_attempts=2)
    result = await sender.create_activity(42, PAYLOAD)
    assert result.status is Status.FAILED
    assert sender.limiter.rate < 1000.0
    assert any(line.startswith("slowing to") for line in notices)


async def test_a_timeout_is_retried(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, exception=TimeoutError())
    api.post(URL_42, status=200, payload={"id": "a1"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.attempts) == (Status.CREATED, 2)
    assert result.ambiguous  # the first POST may have arrived


async def test_timeouts_every_time_fail_without_a_status(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, exception=TimeoutError(), repeat=True)
    result = await make_sender(max_attempts=3).create_activity(42, PAYLOAD)
    assert (result.status, result.http_status, result.attempts) == (Status.FAILED, None, 3)
    assert result.error.startswith("no answer within 30 s (after 3 attempts)")
    assert result.ambiguous


async def test_the_last_status_seen_is_kept_when_the_last_try_had_no_answer(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, status=502)
    api.post(URL_42, exception=TimeoutError(), repeat=True)
    result = await make_sender(max_attempts=2).create_activity(42, PAYLOAD)
    assert (result.status, result.http_status, result.attempts) == (Status.FAILED, 502, 2)


async def test_a_dropped_connection_is_retried(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, exception=aiohttp.ServerDisconnectedError())
    api.post(URL_42, status=200, payload={"id": "a1"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.attempts, result.ambiguous) == (Status.CREATED, 2, True)


async def test_dropped_connections_every_time_fail_as_ambiguous(api, make_sender):
    nothing_on_the_server(api)
    api.post(URL_42, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    result = await make_sender(max_attempts=2).create_activity(42, PAYLOAD)
    assert result.status is Status.FAILED
    assert result.error.startswith("the server closed the connection before answering")
    assert result.ambiguous


async def test_a_refused_connection_is_retried_and_not_ambiguous(make_sender):
    base = f"http://127.0.0.1:{free_loopback_port()}/v1"
    result = await make_sender(base_url=base, max_attempts=2).create_activity(42, PAYLOAD)
    assert (result.status, result.http_status, result.attempts) == (Status.FAILED, None, 2)
    assert result.error.startswith("could not connect")
    assert not result.ambiguous  # nothing reached the API


async def test_redirects_are_not_followed(api, make_sender):
    api.post(URL_42, status=301, headers={"Location": "https://elsewhere.example/v1/x"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert (result.status, result.http_status, result.attempts) == (Status.FAILED, 301, 1)
    assert "redirect to https://elsewhere.example/v1/x not followed" in result.error
    assert len(api.requests) == 1


async def test_401_raises_auth_error_in_one_line_without_the_key(api, make_sender):
    api.post(URL_42, status=401, payload={"message": "Unauthenticated."})
    with pytest.raises(AuthError) as caught:
        await make_sender().create_activity(42, PAYLOAD)
    message = str(caught.value)
    assert "401" in message and "refused the key" in message
    assert "\n" not in message and KEY not in message
    assert len(calls(api)) == 1  # never retried


# -- the key stays secret ------------------------------------------------------------------


def test_the_key_is_not_in_the_senders_repr(session):
    sender = Sender(session, KEY, SenderSettings())
    assert KEY not in repr(sender)
    assert KEY not in repr(vars(sender))


async def test_an_api_echoing_the_key_has_it_blotted_out(api, make_sender):
    api.post(URL_42, status=403, payload={"message": f"token {KEY} may not do this"})
    result = await make_sender().create_activity(42, PAYLOAD)
    assert KEY not in result.error
    assert "<API key>" in result.error


async def test_an_aiohttp_error_carrying_request_headers_becomes_a_plain_reason(api, make_sender):
    info = aiohttp.RequestInfo(
        URL(URL_42), "POST", CIMultiDict({"Authorization": f"Bearer {KEY}"}), URL(URL_42)
    )
    api.post(URL_42, exception=aiohttp.ClientResponseError(info, (), status=0, message="boom"))
    result = await make_sender().create_activity(42, PAYLOAD)
    assert result.status is Status.FAILED
    assert KEY not in result.error and KEY not in repr(result)


@pytest.mark.parametrize(
    "respond",
    [
        {"status": 422, "payload": {"errors": {"subject": ["too long"]}}},
        {"status": 500, "repeat": True},
        {"exception": TimeoutError(), "repeat": True},
        {"exception": aiohttp.ServerDisconnectedError(), "repeat": True},
        {"status": 401, "payload": {"message": f"bad key {KEY}"}},
    ],
)
async def test_the_key_is_in_no_reason_or_exception(api, make_sender, respond):
    api.post(URL_42, **respond)
    try:
        result = await make_sender().create_activity(42, PAYLOAD)
    except AuthError as error:
        text = str(error) + repr(error)
    else:
        text = result.error + repr(result)
    assert KEY not in text


# -- the generic request -------------------------------------------------------------------


async def test_request_gives_the_answer_with_its_json(api, make_sender):
    url = f"{BASE}/contacts?email=ann%40example.org"
    api.get(url, status=200, payload={"data": [{"id": 5}]}, headers={"X-Thing": "1"})
    answer = await make_sender().request("GET", "/contacts", params={"email": "ann@example.org"})
    assert (answer.status, answer.ok, answer.attempts) == (200, True, 1)
    assert answer.json_body == {"data": [{"id": 5}]}
    assert answer.headers["x-thing"] == "1"


async def test_request_gives_the_last_answer_when_retries_run_out(api, make_sender):
    api.delete(f"{BASE}/contacts/1/activities/9", status=503, repeat=True)
    answer = await make_sender(max_attempts=2).request("DELETE", "/contacts/1/activities/9")
    assert (answer.status, answer.attempts, answer.ambiguous) == (503, 2, True)


async def test_request_raises_request_failed_when_never_answered(api, make_sender):
    api.get(f"{BASE}/contacts", exception=TimeoutError(), repeat=True)
    with pytest.raises(RequestFailed) as caught:
        await make_sender(max_attempts=2).request("GET", "/contacts")
    assert caught.value.attempts == 2
    assert KEY not in str(caught.value)


async def test_check_key_passes_on_a_2xx(api, make_sender):
    api.get(f"{BASE}/contacts?per_page=1", status=200, payload={"data": []})
    await make_sender().check_key()


async def test_check_key_raises_auth_error_on_401(api, make_sender):
    api.get(f"{BASE}/contacts?per_page=1", status=401, payload={"message": "Unauthenticated."})
    with pytest.raises(AuthError):
        await make_sender().check_key()


async def test_check_key_says_a_404_means_a_wrong_base_url(api, make_sender):
    api.get(f"{BASE}/contacts?per_page=1", status=404)
    with pytest.raises(ConfigError, match="base URL"):
        await make_sender().check_key()


async def test_check_key_says_when_the_api_cannot_be_reached(make_sender):
    base = f"http://127.0.0.1:{free_loopback_port()}/v1"
    with pytest.raises(ImporterError, match="cannot reach the API"):
        await make_sender(base_url=base, max_attempts=1).check_key()


# -- many activities -----------------------------------------------------------------------


class Jobs:
    """An async iterable of jobs that remembers how many were taken."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken: list[SendJob] = []

    async def __aiter__(self):
        for row in range(2, self.count + 2):
            job = SendJob(row=row, contact_id=1000 + row, payload=PAYLOAD)
            self.taken.append(job)
            yield job


class Results:
    def __init__(self) -> None:
        self.by_row = {}
        self.repeats = []

    def __call__(self, job, result):
        if job.row in self.by_row:
            self.repeats.append(job.row)
        self.by_row[job.row] = result


async def test_send_all_gives_one_result_per_job_with_a_fixed_pool(api, make_sender):
    in_flight = 0
    most_in_flight = 0
    most_tasks = 0

    async def answer(url, **kwargs):
        nonlocal in_flight, most_in_flight, most_tasks
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0.001)
        in_flight -= 1
        contact = url.path.split("/")[-2]
        if contact.endswith("7"):
            return CallbackResult(status=404, payload={"message": "Contact not found."})
        return CallbackResult(status=200, payload={"id": f"act-{contact}"})

    api.post(ANY_ACTIVITY_URL, callback=answer, repeat=True)
    jobs, results = Jobs(60), Results()
    # The limiter spaces requests on the loop's real clock: one that never holds the pool back.
    unlimited = RateLimit(1_000_000.0)
    await make_sender(concurrency=5, limiter=unlimited).send_all(jobs, results)
    assert sorted(results.by_row) == list(range(2, 62)) and results.repeats == []
    assert most_in_flight == 5
    assert most_tasks <= 5 + 1  # the workers and the test itself, not a task per row
    assert results.by_row[2].activity_id == "act-1002"
    assert results.by_row[7].error == "404 Not Found: Contact not found."


async def test_send_all_of_nothing_returns(make_sender):
    results = Results()
    await make_sender().send_all(Jobs(0), results)
    assert results.by_row == {}


async def test_a_401_stops_send_all_and_every_taken_job_is_told(api, make_sender):
    api.post(ANY_ACTIVITY_URL, status=401, payload={"message": "Unauthenticated."}, repeat=True)
    jobs, results = Jobs(100), Results()
    with pytest.raises(AuthError):
        await make_sender(concurrency=4).send_all(jobs, results)
    assert 1 <= len(jobs.taken) <= 4
    assert sorted(results.by_row) == sorted(job.row for job in jobs.taken)
    assert results.repeats == []
    assert all(r.status is Status.FAILED for r in results.by_row.values())
    assert all(r.error.startswith(KEY_REFUSED) for r in results.by_row.values())


async def test_cancelling_send_all_tells_every_taken_job_once(api, make_sender):
    hang = asyncio.Event()
    started = 0

    async def answer(url, **kwargs):
        nonlocal started
        started += 1
        await hang.wait()  # never answers

    api.post(ANY_ACTIVITY_URL, callback=answer, repeat=True)
    jobs, results = Jobs(30), Results()
    run = asyncio.create_task(make_sender(concurrency=4).send_all(jobs, results))
    while started < 4:
        await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert len(jobs.taken) == 4  # no new job taken after the cancel
    assert sorted(results.by_row) == sorted(job.row for job in jobs.taken)
    assert results.repeats == []
    for result in results.by_row.values():
        assert result.status is Status.FAILED
        assert result.error.startswith("interrupted")
        assert result.ambiguous  # the POST was out


async def test_a_job_interrupted_before_its_request_went_out_is_not_ambiguous(api, make_sender):
    hang = asyncio.Event()

    async def answer(url, **kwargs):
        await hang.wait()

    api.post(ANY_ACTIVITY_URL, callback=answer, repeat=True)
    slow = RateLimit(0.5)  # the second request must wait two seconds for its turn
    jobs, results = Jobs(10), Results()
    run = asyncio.create_task(make_sender(concurrency=2, limiter=slow).send_all(jobs, results))
    while len(jobs.taken) < 2:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    first, second = (results.by_row[job.row] for job in jobs.taken)
    assert (first.ambiguous, first.attempts) == (True, 1)
    assert (second.ambiguous, second.attempts, second.error) == (False, 0, "interrupted")


async def test_the_default_limiter_uses_the_settings_rate_and_tells_on_notice(session):
    told = []
    sender = Sender(session, KEY, SenderSettings(rate=2.0), on_notice=told.append)
    sender.limiter.slow_down()
    assert sender.limiter.rate == 1.5
    assert told and told[0].startswith("slowing to 90/min")


# -- a change whose answer was lost is looked at before it is made again -------------------

ACTIVITY_7 = f"{BASE}/contacts/42/activities/7"


def change_job(change):
    from importer.records import Change

    return SendJob(2, 42, PAYLOAD, change=getattr(Change, change), activity_id="7")


async def perform(sender, change):
    from importer.changes import perform_change

    return await perform_change(sender, change_job(change))


@pytest.mark.parametrize("wrapped", [False, True])
async def test_a_put_whose_answer_was_lost_is_not_made_again_once_a_get_shows_it(
    api, make_sender, wrapped
):
    api.put(ACTIVITY_7, status=500, payload={"message": "Server Error"})
    shown = {"id": "7", "type": "note", "subject": "Called about the gala"}
    api.get(ACTIVITY_7, payload={"data": shown} if wrapped else shown)
    result = await perform(make_sender(), "UPDATE")
    assert (result.status, result.activity_id, result.attempts) == (Status.UPDATED, "7", 1)
    assert len(calls(api, "PUT", ACTIVITY_7)) == 1 and len(calls(api, "GET", ACTIVITY_7)) == 1


async def test_a_put_is_made_again_when_the_get_cannot_tell(api, make_sender):
    api.put(ACTIVITY_7, status=500, payload={"message": "Server Error"})
    api.get(ACTIVITY_7, payload={"id": "7", "type": "note", "data": "{}"})  # as documented
    api.put(ACTIVITY_7, status=200, payload={"id": "7", "type": "note"})
    result = await perform(make_sender(), "UPDATE")
    assert (result.status, result.attempts) == (Status.UPDATED, 2)
    assert len(calls(api, "PUT", ACTIVITY_7)) == 2


async def test_a_put_that_finds_the_activity_gone_says_so(api, make_sender):
    api.put(ACTIVITY_7, exception=aiohttp.ServerDisconnectedError())
    api.get(ACTIVITY_7, status=404, payload={"message": "Activity not found."})
    result = await perform(make_sender(), "UPDATE")
    assert result.status is Status.FAILED and result.gone and "was deleted" in result.error
    assert len(calls(api, "PUT", ACTIVITY_7)) == 1


@pytest.mark.parametrize(("still_there", "deletes"), [(False, 1), (True, 2)])
async def test_a_delete_whose_answer_was_lost_is_made_again_only_if_a_get_still_finds_it(
    api, make_sender, still_there, deletes
):
    api.delete(ACTIVITY_7, status=502, payload={"message": "Bad Gateway"})
    if still_there:
        api.get(ACTIVITY_7, payload={"id": "7", "type": "note"})
        api.delete(ACTIVITY_7, status=204)
    else:
        api.get(ACTIVITY_7, status=404, payload={"message": "Activity not found."})
    result = await perform(make_sender(), "DELETE")
    assert result.status is Status.DELETED and result.attempts == deletes
    assert len(calls(api, "DELETE", ACTIVITY_7)) == deletes

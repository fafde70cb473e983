"""Finding an activity whose creation is in doubt: three answers, built on documented fields."""

import re
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aioresponses import aioresponses

from importer.payload import ActivityPayload
from importer.ratelimit import RateLimit
from importer.records import Status
from importer.recover import (
    CLOCK_SKEW,
    Absent,
    Claims,
    Found,
    LookupFailed,
    Sought,
    Unknown,
    decide,
    search,
)
from importer.retry import RetryPolicy
from importer.send import DEFAULT_BASE_URL, Sender, SenderSettings, SendJob

MARK = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WHEN = datetime(2025, 5, 1, 14, 30, tzinfo=UTC)
CALL = ActivityPayload(type="phone_call", subject="Gala", note="Said yes", occurred_at=WHEN)
BLANK = ActivityPayload(type="phone_call", occurred_at=WHEN)


def documented(activity_id, *, created=MARK + timedelta(seconds=2), occurred=WHEN, **extra):
    """An activity as the reference documents it: no subject, note or timezone."""
    return {
        "id": activity_id,
        "type": "phone_call",
        "source": "api",
        "data": "{}",
        "resource": None,
        "resource_type": None,
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "updated_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_by": {"id": "1", "first_name": "A", "last_name": "B", "email": "a@b.org"},
        **extra,
    }


def sought(payload=CALL, row=2, marked_at=MARK):
    return Sought(contact_id=42, payload=payload, marked_at=marked_at, row=row)


# -- what fits ---------------------------------------------------------------------------


def test_one_fitting_activity_is_found():
    assert decide(sought(), [documented("a1")], Claims()) == Found("a1")


def test_no_fitting_activity_is_absent():
    assert decide(sought(), [], Claims()) == Absent()


def test_an_activity_claimed_by_another_row_is_not_a_candidate():
    # The blank row in doubt and another row's activity look alike in the documented shape.
    claims = Claims(ids=frozenset({"a1"}))
    assert decide(sought(BLANK), [documented("a1")], claims) == Absent()


def test_an_activity_created_before_the_mark_less_the_skew_is_not_a_candidate():
    old = documented("a1", created=MARK - CLOCK_SKEW - timedelta(seconds=1))
    assert decide(sought(), [old], Claims()) == Absent()


def test_an_activity_created_within_the_skew_before_the_mark_is_a_candidate():
    early = documented("a1", created=MARK - CLOCK_SKEW + timedelta(seconds=1))
    assert decide(sought(), [early], Claims()) == Found("a1")


def test_occurred_at_is_compared_as_an_instant():
    other_offset = documented("a1", occurred=WHEN.astimezone(datetime.now().astimezone().tzinfo))
    moved = documented("a2", occurred=WHEN + timedelta(minutes=1))
    assert decide(sought(), [other_offset, moved], Claims()) == Found("a1")


def test_a_row_without_occurred_at_takes_any_occurred_at():
    row = sought(ActivityPayload(type="phone_call", subject="Gala"))
    assert decide(row, [documented("a1")], Claims()) == Found("a1")


def test_another_type_never_fits():
    assert decide(sought(), [documented("a1", type="email")], Claims()) == Absent()


@pytest.mark.parametrize(
    "echo",
    [{"subject": "Other"}, {"note": "Said no"}, {"data": '{"subject": "Other", "note": null}'}],
)
def test_echoed_fields_that_differ_rule_an_activity_out(echo):
    assert decide(sought(), [documented("a1", **echo)], Claims()) == Absent()


@pytest.mark.parametrize(
    "echo",
    [
        {"subject": " Gala ", "note": "Said yes"},
        {"data": '{"subject": "Gala", "note": "Said yes", "timezone": null}'},
        {"data": "not json"},
    ],
)
def test_echoed_fields_that_agree_or_say_nothing_keep_it(echo):
    assert decide(sought(), [documented("a1", **echo)], Claims()) == Found("a1")


def test_a_blank_row_matches_an_echoed_null_or_empty_subject():
    echoed = documented("a1", subject=None, note="")
    assert decide(sought(BLANK), [echoed], Claims()) == Found("a1")


def test_a_date_that_does_not_parse_keeps_the_activity_a_candidate():
    odd = {**documented("a1"), "created_at": "yesterday", "occurred_at": "soon"}
    assert decide(sought(), [odd], Claims()) == Found("a1")


# -- several candidates, and other rows in doubt -------------------------------------------


def test_two_candidates_the_fields_cannot_tell_apart_are_unknown():
    answer = decide(sought(), [documented("a1"), documented("a2")], Claims())
    assert isinstance(answer, Unknown) and "2 activities fit" in answer.reason


def test_identical_rows_in_doubt_share_the_candidates_each_taking_one_once():
    twin = sought(row=3)
    activities = [documented("a2", created=MARK + timedelta(seconds=5)), documented("a1")]
    first = decide(sought(), activities, Claims(in_doubt=(twin,)))
    assert first == Found("a1")  # the earliest
    second = decide(twin, activities, Claims(ids=frozenset({"a1"})))
    assert second == Found("a2")


def test_more_candidates_than_identical_rows_in_doubt_is_unknown():
    activities = [documented("a1"), documented("a2"), documented("a3")]
    answer = decide(sought(), activities, Claims(in_doubt=(sought(row=3),)))
    assert isinstance(answer, Unknown)


def test_another_row_in_doubt_that_fits_the_same_activity_makes_it_unknown():
    rival = sought(BLANK, row=7)  # differs in the subject, which the answer does not carry
    answer = decide(sought(), [documented("a1")], Claims(in_doubt=(rival,)))
    assert isinstance(answer, Unknown) and "row 7" in answer.reason


def test_a_row_whose_request_is_out_makes_a_fitting_activity_unknown_even_if_identical():
    answer = decide(sought(), [documented("a1")], Claims(in_flight=(sought(row=3),)))
    assert isinstance(answer, Unknown) and "still out" in answer.reason


def test_other_rows_that_cannot_fit_change_nothing():
    elsewhere = sought(ActivityPayload(type="phone_call", occurred_at=WHEN + timedelta(days=1)))
    claims = Claims(in_doubt=(elsewhere,), in_flight=(elsewhere,))
    assert decide(sought(), [documented("a1")], claims) == Found("a1")


# -- reading the pages ---------------------------------------------------------------------


def pages(*bodies):
    """A get_json that answers the pages in turn (an exception is raised)."""
    asked = []

    async def get_json(path, params):
        asked.append((path, dict(params)))
        body = bodies[len(asked) - 1]
        if isinstance(body, Exception):
            raise body
        return body

    return get_json, asked


def page(*activities, more=False):
    return {"data": list(activities), "links": {"next": "https://x/next" if more else None}}


async def test_every_page_is_read_before_absent():
    get_json, asked = pages(page(documented("a1", type="email"), more=True), page())
    assert await search(get_json, sought()) == Absent()
    assert [p["page"] for _, p in asked] == ["1", "2"]
    assert asked[0] == (
        "/contacts/42/activities",
        {"type": "phone_call", "per_page": "100", "page": "1"},
    )


async def test_found_on_a_later_page():
    get_json, _ = pages(page(more=True), page(documented("a9")))
    assert await search(get_json, sought()) == Found("a9")


@pytest.mark.parametrize(
    "second",
    [LookupFailed("the API answered 503 Service Unavailable"), None, {"data": "x"}, ["a"]],
    ids=["failed", "not-json", "no-list", "not-a-page"],
)
async def test_a_page_that_cannot_be_read_is_unknown_never_absent(second):
    get_json, _ = pages(page(more=True), second)
    answer = await search(get_json, sought())
    assert isinstance(answer, Unknown)
    assert answer.reason.startswith("could not read the contact's activities")


# -- the sender's look before posting again --------------------------------------------------

BASE = DEFAULT_BASE_URL
POST_42 = f"{BASE}/contacts/42/activities"
LIST_42 = re.compile(r"^https://api\.givebutter\.com/v1/contacts/42/activities\?.*$")


@pytest.fixture
async def sender():
    settings = SenderSettings(rate=1000.0, max_attempts=3, retry=RetryPolicy(base_delay=0.001))

    async def instant(_seconds):
        return None

    async with aiohttp.ClientSession() as session:
        limiter = RateLimit(settings.rate, sleep=instant)
        yield Sender(session, "key-123", settings, limiter=limiter)


@pytest.fixture
def api():
    with aioresponses() as mocked:
        yield mocked


def posts(api):
    return sum(len(v) for (method, _), v in api.requests.items() if method == "POST")


def created_now(activity_id, **extra):
    return documented(activity_id, created=datetime.now(UTC), **extra)


async def test_a_500_then_found_is_created_with_the_found_id_and_posted_once(api, sender):
    api.post(POST_42, status=500)
    api.get(LIST_42, payload=page(created_now("a7")))
    result = await sender.create_activity(42, CALL)
    assert (result.status, result.activity_id, posts(api)) == (Status.CREATED, "a7", 1)


async def test_a_500_then_a_look_that_cannot_be_read_is_in_doubt_and_not_posted_again(api, sender):
    api.post(POST_42, status=500, repeat=True)
    api.get(LIST_42, status=503, repeat=True)
    result = await sender.create_activity(42, CALL)
    assert (result.status, result.ambiguous, posts(api)) == (Status.FAILED, True, 1)
    assert result.error.startswith("in doubt: could not check whether the activity was created")
    assert "503 Service Unavailable" in result.error and "not sent again" in result.error


async def test_a_429_on_the_look_is_waited_out(api, sender):
    api.post(POST_42, status=502)
    api.get(LIST_42, status=429, headers={"Retry-After": "0"})
    api.get(LIST_42, payload=page())
    api.post(POST_42, payload=created_now("a2"))
    result = await sender.create_activity(42, CALL)
    assert (result.status, result.activity_id, posts(api)) == (Status.CREATED, "a2", 2)


async def test_a_blank_row_is_not_matched_to_another_rows_activity(api, sender):
    # Row A (with a subject) is created as a1. Row B (blank subject and note, same contact,
    # type and date) gets a 500 that stored nothing; the look finds a1, which the
    # documented answer cannot tell from B's: it is A's, so B is posted again.
    api.post(POST_42, payload=created_now("a1"))
    first = await sender.create_activity(42, CALL)
    api.post(POST_42, status=500)
    api.get(LIST_42, payload=page(created_now("a1")))
    api.post(POST_42, payload=created_now("b1"))
    second = await sender.create_activity(42, BLANK)
    assert (first.activity_id, second.status, second.activity_id) == ("a1", Status.CREATED, "b1")


async def test_the_callers_claims_are_respected(api, sender):
    api.get(LIST_42, payload=page(documented("a1", created=MARK)))
    assert await sender.search_activity(sought(), Claims(ids=frozenset({"a1"}))) == Absent()


async def test_claims_given_to_send_all_are_respected_by_its_look_before_posting_again(api, sender):
    asked = []

    async def claims(contact_id):
        asked.append(contact_id)
        return Claims(ids=frozenset({"a1"}))

    api.post(POST_42, status=500)
    api.get(LIST_42, payload=page(created_now("a1")))  # another row's: not this one
    api.post(POST_42, payload=created_now("a2"))
    results = []

    async def one_job():
        yield SendJob(2, 42, CALL)

    await sender.send_all(one_job(), lambda job, result: results.append(result), claims=claims)
    assert [(r.status, r.activity_id) for r in results] == [(Status.CREATED, "a2")]
    assert asked == [42] and posts(api) == 2

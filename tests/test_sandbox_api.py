"""The sandbox answers the importer's routes as the Givebutter reference pages describe them.

Every test talks HTTP to a sandbox on loopback (no rate limit, no faults) with aiohttp.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from importer.payload import ActivityPayload, ActivityType
from importer.sandbox import (
    SHARED_EMAIL,
    SHARED_EMAIL_CONTACT_IDS,
    Contact,
    ContactPoint,
    Sandbox,
    SandboxSettings,
    running_sandbox,
)

LIVE = 10001
ARCHIVED = 10050
MONDAY = "2024-03-04T09:00:00Z"
# The reference's ContactActivityResource, and nothing more.
DOCUMENTED_ACTIVITY_FIELDS = {
    "id",
    "type",
    "source",
    "data",
    "resource",
    "resource_type",
    "occurred_at",
    "created_at",
    "updated_at",
    "created_by",
}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxSettings(limits=())) as sandbox:
        yield sandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    method: str,
    path: str,
    *,
    key: str | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Send one request with the sandbox's key (or `key`); give the status and JSON body."""
    url = path if path.startswith("http") else sandbox.base_url + path
    headers = {"Authorization": f"Bearer {key or sandbox.api_key}", **kwargs.pop("headers", {})}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def create(
    http: aiohttp.ClientSession, sandbox: Sandbox, contact: int = LIVE, **fields: Any
) -> dict[str, Any]:
    status, body = await call(
        http, sandbox, "POST", f"/contacts/{contact}/activities", json={"type": "note", **fields}
    )
    assert status == 200, body
    return body


# -- POST /v1/contacts/{contact}/activities ------------------------------------------------


async def test_create_answers_200_with_a_bare_activity_resource(sandbox, http):
    body = await create(
        http,
        sandbox,
        type="phone_call",
        subject="Thank-you call",
        note="Loves the youth program",
        occurred_at="2023-11-07T05:31:56Z",
        timezone="America/Chicago",
    )
    assert isinstance(body["id"], str)
    assert body["type"] == "phone_call"
    assert body["source"] == "api"
    assert isinstance(body["data"], str)
    assert body["resource"] is None and body["resource_type"] is None
    assert body["occurred_at"] == "2023-11-07T05:31:56.000000Z"
    assert set(body["created_by"]) == {"id", "first_name", "last_name", "email"}
    assert set(body) == DOCUMENTED_ACTIVITY_FIELDS  # no subject, note or timezone


async def test_echo_fields_brings_subject_note_and_timezone_back(http):
    async with running_sandbox(SandboxSettings(limits=(), echo_fields=True)) as echoing:
        body = await create(
            http, echoing, subject="Thank-you call", note="Loves it", timezone="America/Chicago"
        )
        assert (body["subject"], body["note"], body["timezone"]) == (
            "Thank-you call",
            "Loves it",
            "America/Chicago",
        )
        assert set(body) == DOCUMENTED_ACTIVITY_FIELDS | {"subject", "note", "timezone"}
        _, page = await call(http, echoing, "GET", f"/contacts/{LIVE}/activities")
        assert page["data"][0]["subject"] == "Thank-you call"


async def test_every_answer_about_an_activity_has_the_documented_fields_only(sandbox, http):
    created = await create(http, sandbox, subject="x", note="y")
    _, one = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities/{created['id']}")
    _, page = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities")
    for body in (created, one, page["data"][0]):
        assert set(body) == DOCUMENTED_ACTIVITY_FIELDS
        assert isinstance(body["id"], str) and isinstance(body["data"], str)
        assert "x" not in body["data"] and "y" not in body["data"]


async def test_created_activity_ids_are_strings_of_increasing_numbers(sandbox, http):
    ids = [(await create(http, sandbox))["id"] for _ in range(3)]
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    assert len(set(ids)) == 3


async def test_occurred_at_defaults_to_now(sandbox, http):
    body = await create(http, sandbox)
    occurred = datetime.fromisoformat(body["occurred_at"])
    assert abs(occurred - datetime.now(UTC)) < timedelta(minutes=1)


async def test_occurred_at_with_an_offset_is_given_back_in_utc(sandbox, http):
    body = await create(http, sandbox, occurred_at="2024-06-01T15:30:00+02:00")
    assert body["occurred_at"] == "2024-06-01T13:30:00.000000Z"


async def test_a_missing_key_is_401(sandbox, http):
    async with http.post(f"{sandbox.base_url}/contacts/{LIVE}/activities", json={}) as response:
        assert response.status == 401
        assert await response.json() == {"message": "Unauthenticated."}


async def test_a_wrong_key_is_401(sandbox, http):
    status, body = await call(
        http, sandbox, "POST", f"/contacts/{LIVE}/activities", key="nope", json={"type": "note"}
    )
    assert (status, body) == (401, {"message": "Unauthenticated."})
    assert sandbox.store.count_activities() == 0


async def test_an_unknown_contact_is_404(sandbox, http):
    status, body = await call(
        http, sandbox, "POST", "/contacts/99999/activities", json={"type": "note"}
    )
    assert status == 404
    assert isinstance(body["message"], str)


async def test_a_contact_that_is_not_an_integer_is_404(sandbox, http):
    status, body = await call(http, sandbox, "POST", "/contacts/N%2FA/activities", json={})
    assert status == 404
    assert "message" in body


async def test_an_archived_contact_is_403_even_before_the_body_is_checked(sandbox, http):
    status, body = await call(
        http, sandbox, "POST", f"/contacts/{ARCHIVED}/activities", json={"type": "bogus"}
    )
    assert (status, body) == (403, {"message": "This action is unauthorized."})


async def test_an_invalid_body_is_422_with_laravel_messages_by_field(sandbox, http):
    status, body = await call(
        http,
        sandbox,
        "POST",
        f"/contacts/{LIVE}/activities",
        json={"type": "carrier_pigeon", "subject": "x" * 256},
    )
    assert status == 422
    assert body == {
        "message": "The selected type is invalid. (and 1 more error)",
        "errors": {
            "type": ["The selected type is invalid."],
            "subject": ["The subject field must not be greater than 255 characters."],
        },
    }
    assert sandbox.store.count_activities() == 0


async def test_a_missing_or_null_type_is_required(sandbox, http):
    for body in ({}, {"type": None}):
        status, answer = await call(
            http, sandbox, "POST", f"/contacts/{LIVE}/activities", json=body
        )
        assert status == 422
        assert answer["errors"] == {"type": ["The type field is required."]}
        assert answer["message"] == "The type field is required."


async def test_three_errors_say_two_more_errors(sandbox, http):
    status, body = await call(
        http,
        sandbox,
        "POST",
        f"/contacts/{LIVE}/activities",
        json={"type": "x", "timezone": "t" * 256, "occurred_at": "yesterday"},
    )
    assert status == 422
    assert body["message"].endswith(" (and 2 more errors)")
    assert set(body["errors"]) == {"type", "timezone", "occurred_at"}


async def test_a_body_that_is_not_json_is_422(sandbox, http):
    status, body = await call(
        http,
        sandbox,
        "POST",
        f"/contacts/{LIVE}/activities",
        data=b"type=note",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 422
    assert set(body) == {"message", "errors"}


async def test_fields_the_endpoint_does_not_know_are_ignored(sandbox, http):
    body = await create(http, sandbox, campaign="Spring gala")
    assert "campaign" not in body


# -- reading activities back ---------------------------------------------------------------


async def test_listing_activities_pages_with_absolute_links(sandbox, http):
    ids = [(await create(http, sandbox, subject=f"call {n}"))["id"] for n in range(5)]
    status, page = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities?per_page=2")
    assert status == 200
    assert [a["id"] for a in page["data"]] == ids[:2]
    meta = page["meta"]
    assert (meta["current_page"], meta["last_page"], meta["per_page"], meta["total"]) == (
        1,
        3,
        2,
        5,
    )
    assert (meta["from"], meta["to"]) == (1, 2)
    assert meta["path"] == f"{sandbox.base_url}/contacts/{LIVE}/activities"
    assert page["links"]["prev"] is None
    assert page["links"]["next"].startswith(sandbox.root_url)


async def test_following_next_links_reaches_every_activity_once(sandbox, http):
    ids = [(await create(http, sandbox, subject=f"call {n}"))["id"] for n in range(5)]
    seen, url = [], f"{sandbox.base_url}/contacts/{LIVE}/activities?per_page=2"
    while url is not None:
        status, page = await call(http, sandbox, "GET", url)
        assert status == 200
        seen += [a["id"] for a in page["data"]]
        url = page["links"]["next"]
    assert seen == ids


async def test_the_last_page_has_no_next_link(sandbox, http):
    await create(http, sandbox)
    _, page = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities?page=1")
    assert page["links"]["next"] is None
    assert page["links"]["first"] == page["links"]["last"]


async def test_listing_activities_filters_by_type(sandbox, http):
    await create(http, sandbox, type="email")
    await create(http, sandbox, type="sms")
    _, page = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities?type=sms")
    assert [a["type"] for a in page["data"]] == ["sms"]


async def test_per_page_over_100_is_422(sandbox, http):
    status, body = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities?per_page=101")
    assert status == 422
    assert "per_page" in body["errors"]


async def test_one_activity_can_be_read_back(sandbox, http):
    created = await create(http, sandbox, subject="Site visit")
    status, body = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities/{created['id']}")
    assert (status, body) == (200, created)


async def test_an_unknown_activity_is_404(sandbox, http):
    status, _ = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities/424242")
    assert status == 404


async def test_another_contacts_activity_is_404(sandbox, http):
    created = await create(http, sandbox, contact=10002)
    status, _ = await call(http, sandbox, "GET", f"/contacts/{LIVE}/activities/{created['id']}")
    assert status == 404


async def test_deleting_an_activity_answers_204_and_it_is_gone(sandbox, http):
    created = await create(http, sandbox)
    path = f"/contacts/{LIVE}/activities/{created['id']}"
    assert (await call(http, sandbox, "DELETE", path))[0] == 204
    assert (await call(http, sandbox, "GET", path))[0] == 404
    assert (await call(http, sandbox, "DELETE", path))[0] == 404


async def test_an_archived_contacts_activities_are_403(sandbox, http):
    status, _ = await call(http, sandbox, "GET", f"/contacts/{ARCHIVED}/activities")
    assert status == 403


# -- PUT /v1/contacts/{contact}/activities/{activity} --------------------------------------


async def put(
    http: aiohttp.ClientSession, sandbox: Sandbox, activity: str, contact: int = LIVE, **body: Any
) -> tuple[int, Any]:
    path = f"/contacts/{contact}/activities/{activity}"
    return await call(http, sandbox, "PUT", path, json=body)


async def test_put_updates_the_stored_activity_and_answers_200_with_it(sandbox, http):
    created = await create(http, sandbox, subject="Call", note="first", occurred_at=MONDAY)
    status, body = await put(
        http,
        sandbox,
        created["id"],
        type="meeting",
        subject="Visit",
        note="second",
        occurred_at="2024-03-05T14:30:00-06:00",
        timezone="America/Chicago",
    )
    assert status == 200
    assert (body["id"], body["type"]) == (created["id"], "meeting")
    assert body["occurred_at"] == "2024-03-05T20:30:00.000000Z"
    assert body["created_at"] == created["created_at"]
    assert body["updated_at"] >= created["updated_at"]
    stored = sandbox.store.find_activity(created["id"])
    assert (stored.type, stored.subject, stored.note, stored.timezone) == (
        "meeting",
        "Visit",
        "second",
        "America/Chicago",
    )
    assert stored.contact_id == LIVE and sandbox.store.count_activities() == 1


async def test_put_answers_the_documented_resource_shape(sandbox, http):
    created = await create(http, sandbox)
    _, body = await put(http, sandbox, created["id"], type="email")
    documented = {"id", "type", "source", "data", "resource", "resource_type", "occurred_at"}
    assert documented | {"created_at", "updated_at", "created_by"} <= set(body)
    assert isinstance(body["id"], str)


async def test_what_put_returns_is_what_get_then_shows(sandbox, http):
    created = await create(http, sandbox)
    _, updated = await put(http, sandbox, created["id"], type="sms", subject="Texted")
    path = f"/contacts/{LIVE}/activities/{created['id']}"
    assert await call(http, sandbox, "GET", path) == (200, updated)


async def test_put_replaces_fields_left_out_with_null_but_keeps_the_date(sandbox, http):
    created = await create(
        http, sandbox, subject="Call", note="first", occurred_at=MONDAY, timezone="Europe/Paris"
    )
    status, body = await put(http, sandbox, created["id"], type="note")
    assert status == 200
    assert body["occurred_at"] == created["occurred_at"]
    stored = sandbox.store.find_activity(created["id"])
    assert (stored.subject, stored.note, stored.timezone) == (None, None, None)


async def test_put_checks_the_body_as_post_does(sandbox, http):
    created = await create(http, sandbox, subject="Kept")
    status, body = await put(http, sandbox, created["id"], type="fax", subject="x" * 256)
    assert status == 422
    assert set(body) == {"message", "errors"}
    assert body["errors"]["type"] == ["The selected type is invalid."]
    assert body["errors"]["subject"] == [
        "The subject field must not be greater than 255 characters."
    ]
    assert sandbox.store.find_activity(created["id"]).subject == "Kept"


async def test_put_of_a_body_that_is_not_a_json_object_is_422(sandbox, http):
    created = await create(http, sandbox)
    path = f"/contacts/{LIVE}/activities/{created['id']}"
    status, body = await call(http, sandbox, "PUT", path, data=b"[1, 2]")
    assert status == 422
    assert "body" in body["errors"]


async def test_put_of_an_unknown_activity_is_404(sandbox, http):
    assert (await put(http, sandbox, "424242", type="note"))[0] == 404
    assert (await put(http, sandbox, "not-a-number", type="note"))[0] == 404
    # The activity is looked for before the body is checked.
    assert (await put(http, sandbox, "424242", type="fax"))[0] == 404


async def test_put_of_a_deleted_activity_is_404_and_does_not_bring_it_back(sandbox, http):
    created = await create(http, sandbox)
    path = f"/contacts/{LIVE}/activities/{created['id']}"
    assert (await call(http, sandbox, "DELETE", path))[0] == 204
    assert (await put(http, sandbox, created["id"], type="note"))[0] == 404
    assert sandbox.store.find_activity(created["id"]) is None


async def test_put_of_another_contacts_activity_is_404_and_changes_nothing(sandbox, http):
    created = await create(http, sandbox, contact=10002, subject="Theirs")
    assert (await put(http, sandbox, created["id"], contact=LIVE, type="email"))[0] == 404
    stored = sandbox.store.find_activity(created["id"])
    assert (stored.contact_id, stored.type, stored.subject) == (10002, "note", "Theirs")


async def test_put_for_an_archived_contact_is_403(sandbox, http):
    stored = sandbox.store.add_activity(
        ARCHIVED, ActivityPayload(type=ActivityType.NOTE), now=datetime.now(UTC)
    )
    status, body = await put(http, sandbox, stored.id, contact=ARCHIVED, type="email")
    assert (status, body) == (403, {"message": "This action is unauthorized."})
    assert sandbox.store.find_activity(stored.id).type == "note"


async def test_put_for_an_unknown_contact_is_404(sandbox, http):
    created = await create(http, sandbox)
    assert (await put(http, sandbox, created["id"], contact=999999, type="note"))[0] == 404


async def test_put_needs_the_key(sandbox, http):
    created = await create(http, sandbox)
    path = f"/contacts/{LIVE}/activities/{created['id']}"
    status, _ = await call(http, sandbox, "PUT", path, key="wrong", json={"type": "email"})
    assert status == 401
    assert sandbox.store.find_activity(created["id"]).type == "note"


async def test_without_put_the_route_answers_405_and_changes_nothing(http):
    async with running_sandbox(SandboxSettings(limits=(), put_allowed=False)) as sandbox:
        created = await create(http, sandbox, subject="Kept")
        path = f"/contacts/{LIVE}/activities/{created['id']}"
        status, body = await call(http, sandbox, "PUT", path, json={"type": "email"})
        assert status == 405
        assert "PUT method is not supported" in body["message"]
        assert sandbox.store.find_activity(created["id"]).subject == "Kept"
        # The rest of the activity's routes are still there.
        assert (await call(http, sandbox, "GET", path))[0] == 200
        assert (await call(http, sandbox, "DELETE", path))[0] == 204


async def test_the_store_gives_tests_every_activity_with_its_content(sandbox, http):
    first = await create(http, sandbox, subject="One", note="n1")
    second = await create(http, sandbox, contact=10002, subject="Two")
    everything = sandbox.store.all_activities()
    assert [(a.id, a.contact_id, a.subject) for a in everything] == [
        (first["id"], LIVE, "One"),
        (second["id"], 10002, "Two"),
    ]
    assert everything[0].note == "n1"


# -- contacts ------------------------------------------------------------------------------


async def test_listing_contacts_gives_20_of_1000_seeded(sandbox, http):
    status, page = await call(http, sandbox, "GET", "/contacts")
    assert status == 200
    assert len(page["data"]) == 20
    assert page["meta"]["total"] == 1000
    assert page["meta"]["last_page"] == 50
    assert page["data"][0]["id"] == 10001
    assert page["links"]["next"] == f"{sandbox.base_url}/contacts?page=2"


async def test_a_contact_carries_the_fields_resolution_needs(sandbox, http):
    _, page = await call(http, sandbox, "GET", "/contacts?per_page=1")
    contact = page["data"][0]
    assert {
        "id",
        "external_id",
        "external_ids",
        "emails",
        "phones",
        "primary_email",
        "primary_phone",
        "first_name",
        "last_name",
        "archived_at",
        "created_at",
        "updated_at",
    } <= set(contact)
    assert contact["primary_email"] == contact["emails"][0]["value"]
    assert contact["external_id"] == "CRM-000001"


async def test_following_next_links_visits_every_contact_once(sandbox, http):
    ids, url = [], f"{sandbox.base_url}/contacts?per_page=100"
    while url is not None:
        _, page = await call(http, sandbox, "GET", url)
        ids += [contact["id"] for contact in page["data"]]
        url = page["links"]["next"]
    assert ids == list(range(10001, 11001))


async def test_the_email_filter_matches_any_email_ignoring_case(sandbox, http):
    _, page = await call(http, sandbox, "GET", "/contacts/10004")
    work = page["emails"][1]["value"]
    assert work != work.lower()
    for query in (work.lower(), work.upper()):
        _, found = await call(http, sandbox, "GET", "/contacts", params={"email": query})
        assert [c["id"] for c in found["data"]] == [10004]


async def test_the_email_filter_keeps_itself_in_the_links(sandbox, http):
    _, found = await call(http, sandbox, "GET", "/contacts", params={"email": SHARED_EMAIL})
    assert "email=" in found["links"]["first"]


async def test_a_shared_email_finds_both_contacts(sandbox, http):
    _, found = await call(http, sandbox, "GET", "/contacts", params={"email": SHARED_EMAIL})
    assert tuple(c["id"] for c in found["data"]) == SHARED_EMAIL_CONTACT_IDS


async def test_an_email_nobody_has_finds_nothing(sandbox, http):
    _, found = await call(http, sandbox, "GET", "/contacts", params={"email": "no@one.org"})
    assert found["data"] == [] and found["meta"]["total"] == 0
    assert found["links"]["next"] is None


async def test_one_contact_can_be_read(sandbox, http):
    status, contact = await call(http, sandbox, "GET", f"/contacts/{LIVE}")
    assert status == 200 and contact["id"] == LIVE


async def test_an_archived_contact_can_be_read_and_says_so(sandbox, http):
    status, contact = await call(http, sandbox, "GET", f"/contacts/{ARCHIVED}")
    assert status == 200
    assert contact["archived_at"] is not None


async def test_an_unknown_contact_cannot_be_read(sandbox, http):
    assert (await call(http, sandbox, "GET", "/contacts/99999"))[0] == 404


async def test_a_contact_added_in_python_is_served(sandbox, http):
    sandbox.store.add_contact(
        Contact(
            id=20001,
            first_name="Ada",
            last_name="Lovelace",
            emails=(ContactPoint("personal", "ada@example.org"),),
        )
    )
    _, found = await call(http, sandbox, "GET", "/contacts", params={"email": "ADA@example.org"})
    assert [c["id"] for c in found["data"]] == [20001]
    await create(http, sandbox, contact=20001)
    assert sandbox.store.count_activities(20001) == 1


# -- the rest ------------------------------------------------------------------------------


async def test_creating_a_contact_answers_201_with_the_bare_contact(sandbox, http):
    body = {"first_name": "Ada", "last_name": "New", "email": "Ada@New.example", "phone": "+1555"}
    status, contact = await call(http, sandbox, "POST", "/contacts", json=body)
    assert status == 201
    assert contact["id"] == 11001 and contact["primary_email"] == "Ada@New.example"
    assert contact["phones"] == [{"type": "cell", "value": "+1555"}]
    status, listed = await call(http, sandbox, "GET", "/contacts?email=ada@new.example")
    assert [c["id"] for c in listed["data"]] == [11001]


async def test_the_same_names_with_the_same_email_or_phone_give_back_the_contact(sandbox, http):
    seeded = sandbox.store.get_contact(LIVE)
    assert seeded is not None and seeded.primary_email is not None
    same = {"first_name": seeded.first_name.upper(), "last_name": seeded.last_name}
    for extra in ({"email": seeded.primary_email}, {"phone": "+15550000001"}):
        status, contact = await call(http, sandbox, "POST", "/contacts", json={**same, **extra})
        assert (status, contact["id"]) == (200, LIVE)
    other = {"first_name": "Someone", "last_name": "Else", "email": seeded.primary_email}
    status, contact = await call(http, sandbox, "POST", "/contacts", json=other)
    assert status == 201 and contact["id"] != LIVE  # another person may share an address
    forced = {**same, "email": seeded.primary_email, "force_create": True}
    assert (await call(http, sandbox, "POST", "/contacts", json=forced))[0] == 201


async def test_creating_a_contact_checks_its_fields(sandbox, http):
    status, body = await call(
        http, sandbox, "POST", "/contacts", json={"first_name": 5, "email": "not an address"}
    )
    assert status == 422
    assert body["errors"] == {
        "first_name": ["The first name field must be a string."],
        "email": ["The email field must be a valid email address."],
    }
    assert (await call(http, sandbox, "POST", "/contacts", json={}))[0] == 422


async def test_an_unknown_route_is_a_json_404(sandbox, http):
    status, body = await call(http, sandbox, "GET", "/campaigns")
    assert status == 404 and "message" in body


async def test_the_stats_route_needs_no_key_and_counts_answers(sandbox, http):
    await create(http, sandbox)
    await call(http, sandbox, "GET", "/contacts/99999")
    async with http.get(sandbox.stats_url) as response:
        stats = await response.json()
    assert response.status == 200
    assert stats["activities"] == 1
    assert stats["admitted"] == 2
    assert {"method": "GET", "route": "/v1/contacts/{contact}", "status": 404, "count": 1} in (
        stats["responses"]
    )
    assert "admitted_times" not in stats


async def test_stats_are_kept_in_python_too(sandbox, http):
    await create(http, sandbox)
    assert sandbox.stats.count("POST", "/v1/contacts/{contact}/activities", 200) == 1
    assert len(sandbox.stats.admitted_times) == 1

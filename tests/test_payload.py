"""The payload model is the API contract of POST /v1/contacts/{contact}/activities."""

from datetime import UTC, datetime

import pytest

from importer.payload import ACTIVITY_TYPES, ActivityPayload, validate_payload


def test_the_seven_documented_types_are_the_only_types():
    assert set(ACTIVITY_TYPES) == {
        "email",
        "meeting",
        "note",
        "phone_call",
        "sms",
        "completed_task",
        "volunteer_activity",
    }


@pytest.mark.parametrize("kind", ACTIVITY_TYPES)
def test_every_documented_type_is_accepted(kind):
    payload, errors = validate_payload({"type": kind})
    assert errors == [] and payload is not None and payload.to_body() == {"type": kind}


def test_an_undocumented_type_is_refused_in_plain_words():
    _, errors = validate_payload({"type": "call"})
    assert errors == [
        "type ('call') is not one of email, meeting, note, phone_call, sms, completed_task, "
        "volunteer_activity"
    ]


def test_type_is_required():
    _, errors = validate_payload({"subject": "hi"})
    assert errors == ["type is required"]


def test_subject_of_255_characters_is_accepted_and_256_refused():
    assert validate_payload({"type": "note", "subject": "x" * 255})[1] == []
    assert validate_payload({"type": "note", "subject": "x" * 256})[1] == [
        "subject is longer than 255 characters"
    ]


def test_timezone_of_256_characters_is_refused():
    assert validate_payload({"type": "note", "timezone": "x" * 256})[1] == [
        "timezone is longer than 255 characters"
    ]


def test_note_has_no_length_limit():
    payload, errors = validate_payload({"type": "note", "note": "n" * 100_000})
    assert errors == [] and payload is not None and len(payload.to_body()["note"]) == 100_000


def test_occurred_at_is_sent_as_iso_8601_in_utc():
    payload, _ = validate_payload(
        {"type": "email", "occurred_at": datetime(2023, 11, 7, 5, 31, 56, tzinfo=UTC)}
    )
    assert payload is not None and payload.to_body()["occurred_at"] == "2023-11-07T05:31:56Z"


def test_occurred_at_without_an_offset_is_refused():
    _, errors = validate_payload({"type": "email", "occurred_at": "2023-11-07T05:31:56"})
    assert errors == ["occurred_at has no UTC offset or timezone"]


def test_occurred_at_that_is_not_a_date_is_refused():
    _, errors = validate_payload({"type": "email", "occurred_at": "yesterday"})
    assert errors == ["occurred_at ('yesterday') is not an ISO 8601 date-time"]


def test_fields_never_set_are_left_out_of_the_body():
    payload = ActivityPayload(type="note", subject="s")
    assert payload.to_body() == {"type": "note", "subject": "s"}


def test_a_field_set_to_null_is_sent_as_null():
    payload = ActivityPayload(type="note", subject=None)
    assert payload.to_body() == {"type": "note", "subject": None}


def test_unknown_fields_are_refused():
    _, errors = validate_payload({"type": "note", "priority": "high"})
    assert errors == ["priority is not a field of an activity"]

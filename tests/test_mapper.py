"""The map stage: every mapping feature, row by row, on small frames."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from importer.mapper import READ_ERROR_COLUMN, Mapper
from importer.mapping import parse_mapping
from importer.payload import ActivityPayload


def map_rows(mapping_text: str, columns: dict[str, list[str]], rows: list[int] | None = None):
    frame = pd.DataFrame(columns)
    frame.index = rows or list(range(2, 2 + len(frame)))
    return Mapper(parse_mapping(mapping_text)).map_chunk(frame)


def bodies(mapped):
    return [m.payload.to_body() if m.payload else m.errors for m in mapped]


BASE = "contact: C\nactivity:\n"


def test_each_row_keeps_its_spreadsheet_row_number():
    mapped = map_rows(BASE + "  type: {value: note}\n", {"C": ["1", "2"]}, rows=[5, 9])
    assert [m.row for m in mapped] == [5, 9]


def test_a_column_is_trimmed():
    mapped = map_rows(
        BASE + "  type: T\n  subject: S\n", {"C": [" 7 "], "T": [" email "], "S": ["  Hello  "]}
    )
    assert bodies(mapped) == [{"type": "email", "subject": "Hello"}]
    assert mapped[0].contact == "7"


def test_a_constant_value():
    assert bodies(map_rows(BASE + "  type: {value: meeting}\n", {"C": ["1"]})) == [
        {"type": "meeting"}
    ]


def test_a_template_joins_columns():
    mapped = map_rows(
        BASE + "  type: {value: note}\n  subject: {template: '{P}: {S}'}\n",
        {"C": ["1"], "P": ["Thanks"], "S": ["Gift"]},
    )
    assert bodies(mapped) == [{"type": "note", "subject": "Thanks: Gift"}]


def test_a_template_drops_separators_around_blank_columns():
    mapped = map_rows(
        BASE + "  type: {value: note}\n  subject: {template: '{P}: {S}'}\n",
        {"C": ["1", "2"], "P": ["", "Thanks"], "S": ["Gift", ""]},
    )
    assert [b["subject"] for b in bodies(mapped)] == ["Gift", "Thanks"]


def test_a_template_of_blank_columns_takes_the_default():
    text = BASE + "  type: {value: note}\n  subject: {template: '{P}: {S}', default: None given}\n"
    mapped = map_rows(text, {"C": ["1"], "P": [""], "S": [" "]})
    assert bodies(mapped) == [{"type": "note", "subject": "None given"}]


def test_a_default_fills_blank_cells_only():
    mapped = map_rows(
        BASE + "  type: {column: T, default: note}\n", {"C": ["1", "2"], "T": ["", "sms"]}
    )
    assert bodies(mapped) == [{"type": "note"}, {"type": "sms"}]


def test_a_map_ignores_case_and_spacing():
    text = BASE + "  type: {column: T, map: {Phone Call: phone_call, Text Message: sms}}\n"
    mapped = map_rows(text, {"C": ["1", "2", "3"], "T": ["PHONE  CALL", " text message", "email"]})
    assert bodies(mapped) == [{"type": "phone_call"}, {"type": "sms"}, {"type": "email"}]


def test_a_type_nobody_mapped_makes_the_row_invalid():
    mapped = map_rows(
        BASE + "  type: {column: T, map: {Call: phone_call}}\n",
        {"C": ["1"], "T": ["Carrier Pigeon"]},
    )
    assert mapped[0].payload is None
    assert mapped[0].errors == [
        "type ('Carrier Pigeon') is not one of email, meeting, note, "
        "phone_call, sms, completed_task, volunteer_activity"
    ]


def test_a_blank_type_without_default_is_invalid():
    mapped = map_rows(BASE + "  type: T\n", {"C": ["1"], "T": [""]})
    assert mapped[0].errors == ["type is blank and the mapping gives no default"]


def test_truncate_cuts_and_says_so():
    text = BASE + "  type: {value: note}\n  subject: {column: S, truncate: 255}\n"
    mapped = map_rows(text, {"C": ["1", "2"], "S": ["x" * 300, "short"]})
    assert len(mapped[0].payload.subject) == 255
    assert mapped[0].warnings == ["subject truncated from 300 to 255 characters"]
    assert mapped[1].warnings == []


def test_a_subject_over_255_without_truncate_is_invalid():
    mapped = map_rows(
        BASE + "  type: {value: note}\n  subject: S\n", {"C": ["1"], "S": ["x" * 256]}
    )
    assert mapped[0].errors == ["subject is longer than 255 characters"]


def test_a_long_note_is_never_cut():
    mapped = map_rows(
        BASE + "  type: {value: note}\n  note: N\n", {"C": ["1"], "N": ["n" * 10_000]}
    )
    assert len(mapped[0].payload.note) == 10_000


def test_blank_fields_are_left_out():
    mapped = map_rows(BASE + "  type: {value: note}\n  subject: S\n", {"C": ["1"], "S": [""]})
    assert bodies(mapped) == [{"type": "note"}]


def test_send_null_sends_a_blank_field_as_null():
    text = BASE + "  type: {value: note}\n  subject: {column: S, send_null: true}\n"
    assert bodies(map_rows(text, {"C": ["1"], "S": [""]})) == [{"type": "note", "subject": None}]


DATES = BASE + "  type: {value: note}\n  occurred_at: {column: D%s}\n"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2024-03-05T14:30:00Z", "2024-03-05T14:30:00Z"),
        ("2024-03-05T14:30:00+02:00", "2024-03-05T12:30:00Z"),
        ("2024-03-05 14:30", "2024-03-05T14:30:00Z"),
        ("2024-03-05", "2024-03-05T12:00:00Z"),  # a calendar day: noon
    ],
)
def test_iso_8601_is_read_by_default_and_naive_times_are_utc(cell, expected):
    mapped = map_rows(DATES % "", {"C": ["1"], "D": [cell]})
    assert mapped[0].payload.to_body()["occurred_at"] == expected


def test_formats_are_tried_in_order_then_iso():
    text = DATES % ", formats: ['%m/%d/%Y %I:%M %p', '%m/%d/%Y']"
    mapped = map_rows(
        text,
        {"C": ["1", "2", "3"], "D": ["03/05/2024 02:30 PM", "03/05/2024", "2024-03-06T01:00:00Z"]},
    )
    assert [b["occurred_at"] for b in bodies(mapped)] == [
        "2024-03-05T14:30:00Z",
        "2024-03-05T12:00:00Z",  # read by a format without a time of day: a calendar day
        "2024-03-06T01:00:00Z",
    ]


def test_naive_times_are_localised_to_the_mapping_timezone():
    text = DATES % ", timezone: America/New_York"
    mapped = map_rows(text, {"C": ["1", "2"], "D": ["2024-01-15 09:00", "2024-07-15 09:00"]})
    assert [b["occurred_at"] for b in bodies(mapped)] == [
        "2024-01-15T14:00:00Z",
        "2024-07-15T13:00:00Z",
    ]


def test_times_with_an_offset_keep_it_whatever_the_timezone():
    text = DATES % ", timezone: America/New_York"
    mapped = map_rows(text, {"C": ["1"], "D": ["2024-01-15T09:00:00+01:00"]})
    assert mapped[0].payload.to_body()["occurred_at"] == "2024-01-15T08:00:00Z"


def test_an_ambiguous_time_at_a_dst_change_is_read_as_the_first_instant():
    text = DATES % ", timezone: America/New_York"
    mapped = map_rows(text, {"C": ["1"], "D": ["2024-11-03 01:30"]})
    assert mapped[0].payload.to_body()["occurred_at"] == "2024-11-03T05:30:00Z"


def test_a_date_that_does_not_parse_says_what_was_tried():
    text = DATES % ", formats: ['%m/%d/%Y']"
    mapped = map_rows(text, {"C": ["1"], "D": ["31/02/2024"]})
    assert mapped[0].errors == ["occurred_at ('31/02/2024') does not match '%m/%d/%Y' or ISO 8601"]


def test_a_blank_date_is_left_out():
    assert bodies(map_rows(DATES % "", {"C": ["1"], "D": [""]})) == [{"type": "note"}]


def test_skip_rules_match_trimmed_and_case_insensitive_and_name_the_rule():
    text = (
        BASE + "  type: {value: note}\nskip:\n  - {column: S, equals: Cancelled}\n"
        "  - {column: S, in: [Draft, Test]}\n  - {column: S, contains: spam}\n"
        "  - {column: C, blank: true}\n"
    )
    mapped = map_rows(
        text,
        {"C": ["1", "2", "3", "", "5"], "S": [" cancelled", "TEST", "is SPAM here", "ok", "ok"]},
    )
    assert [m.skipped_by for m in mapped] == [
        "skip rule 1: S equals 'Cancelled'",
        "skip rule 2: S is one of 'Draft', 'Test'",
        "skip rule 3: S contains 'spam'",
        "skip rule 4: C is blank",
        None,
    ]


def test_a_skipped_row_is_not_validated():
    text = BASE + "  type: T\nskip:\n  - {column: T, equals: junk}\n"
    mapped = map_rows(text, {"C": ["x"], "T": ["junk"]})
    assert mapped[0].skipped_by and mapped[0].errors == []


def test_a_blank_contact_is_invalid():
    mapped = map_rows(BASE + "  type: {value: note}\n", {"C": [""]})
    assert mapped[0].errors == ["contact: C is blank"]


def test_a_contact_id_that_is_not_a_number_is_invalid():
    mapped = map_rows(BASE + "  type: {value: note}\n", {"C": ["N/A"]})
    assert mapped[0].errors == ["contact id ('N/A') is not a Givebutter contact id (a number)"]


def test_contact_keys_are_tried_in_order():
    text = "contact: {id: I, email: E}\nactivity:\n  type: {value: note}\n"
    mapped = map_rows(text, {"I": ["12", ""], "E": ["a@b.org", "c@d.org"]})
    assert [m.contact for m in mapped] == ["12", "email:c@d.org"]


def test_several_problems_are_all_reported():
    text = BASE + "  type: T\n  subject: S\n  occurred_at: D\n"
    mapped = map_rows(text, {"C": ["x"], "T": ["fax"], "S": ["s" * 300], "D": ["never"]})
    assert len(mapped[0].errors) == 4


def test_a_read_error_makes_the_row_invalid():
    frame = {"C": ["1"], "__read_error__": ["row has 9 fields, the header has 7"]}
    mapped = map_rows(BASE + "  type: {value: note}\n", frame)
    assert mapped[0].errors == ["row has 9 fields, the header has 7"]
    assert READ_ERROR_COLUMN == "__read_error__"


def test_a_timezone_field_value_must_be_an_iana_name():
    mapped = map_rows(
        BASE + "  type: {value: note}\n  timezone: Z\n", {"C": ["1"], "Z": ["Moon/Base"]}
    )
    assert mapped[0].errors[0].startswith("timezone: 'Moon/Base' is not an IANA timezone name")


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00Z",
        "2024-03-05T14:30:00.000500+01:00",
        "2024-03-05T14:30:00.5Z",
        "9999-12-31T23:59:59.999999Z",
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.25Z",
    ],
)
def test_dates_are_written_as_the_payload_model_writes_them(text):
    mapping = parse_mapping(BASE + "  type: {value: note}\n  occurred_at: D\n")
    chunk = Mapper(mapping).map_columns(pd.DataFrame({"C": ["1"], "D": [text]}, index=[2]))
    instant = datetime.fromisoformat(text).astimezone(UTC)
    payload = ActivityPayload.model_validate({"type": "note", "occurred_at": instant})
    assert chunk.values["occurred_at"].to_pylist() == [payload.to_body()["occurred_at"]]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("03/05/2024 02:30 PM", "2024-03-05T14:30:00Z"),
        ("3/5/2024 2:30 pm", "2024-03-05T14:30:00Z"),  # unpadded, lower case: pandas reads it
        ("12/31/1999 11:59 PM", "1999-12-31T23:59:00Z"),
        ("02/30/2024 01:00 AM", None),  # no such day (a lenient parser says March 1st)
        ("03/05/24 02:30 PM", None),  # a two-digit year is not %Y
        ("03/05/2024 02:30 PM extra", None),
        ("03/05/2024 13:30 PM", None),
    ],
)
def test_a_format_reads_exactly_what_it_describes(cell, expected):
    mapped = map_rows(DATES % ", formats: ['%m/%d/%Y %I:%M %p']", {"C": ["1"], "D": [cell]})
    if expected is None:
        assert mapped[0].payload is None and "does not match" in mapped[0].errors[0]
    else:
        assert mapped[0].payload.to_body()["occurred_at"] == expected


@pytest.mark.parametrize(
    "fmt", ["%m/%d/%Y %I:%M %p", "%Y-%m-%d %H:%M:%S", "%d.%m.%Y %H:%M", "100%% %Y", "%b %d %Y"]
)
def test_the_fast_date_writer_writes_as_strftime_does(fmt):
    import pyarrow as pa
    import pyarrow.compute as pc

    from importer.dates import strftime

    hours = [datetime(2024, 1, 1, h, 7, 9) for h in range(24)]
    years = [datetime(y, 12, 31, 23, 59, 59) for y in (1, 99, 999, 1970, 9999)]
    instants = pa.array(hours + years, pa.timestamp("s"))
    assert strftime(instants, fmt).equals(pc.strftime(instants, format=fmt))


@pytest.mark.parametrize(
    "fmt", ["%m/%d/%Y %I:%M %p", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S", "%Y%m%d", "%d/%m/%Y %H:%M"]
)
def test_dates_with_a_format_are_read_as_pandas_reads_them(fmt):
    """arrow's reading is trusted only where it is surely pandas' reading; pandas decides
    the rest: padded or not, out of range, 29 February, lower-case am, stray spaces."""
    from importer.dates import _strptime

    rng = np.random.default_rng(7)
    instants = rng.integers(-2_000_000_000, 4_000_000_000, 3000).astype("datetime64[s]")
    written = pd.Series(instants).dt.strftime(fmt).tolist()
    odd = [
        "02/30/2024 10:00 AM", "2/3/2024 1:05 PM", "02/03/2024 10:00 am", "02/29/2024 12:00 AM",
        "02/29/2023 12:00 PM", "13/01/2024 10:00 AM", "01/01/2024 13:00 PM", "01/01/0000 10:00 AM",
        "29.02.2024", "31.04.2024", "1.1.2024", "2024-02-29 23:59:59", "2024-02-30 00:00:00",
        "20240229", "20230229", "29/02/2024 24:00", " 01/01/2024 10:00 AM", "01/01/2024  10:00",
    ]  # fmt: skip
    cells = [*written, *odd, *(cell.replace("0", "") for cell in written[:200])]
    mine = _strptime(pa.array(cells), fmt)
    theirs = pd.to_datetime(pd.Series(cells, dtype=object), format=fmt, errors="coerce")
    np.testing.assert_array_equal(mine, theirs.to_numpy(dtype="datetime64[us]"))


def test_whole_and_fractional_seconds_in_one_column_are_written_as_the_model_does():
    from importer.dates import iso_text

    moments = [
        datetime(2023, 11, 7, 5, 31, 56, tzinfo=UTC),
        datetime(2023, 11, 7, 5, 31, 56, 123, tzinfo=UTC),
        datetime(2024, 2, 29, 0, 0, 0, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    instants = np.array([m.replace(tzinfo=None) for m in moments], dtype="datetime64[us]")
    written = iso_text(np.append(instants, np.datetime64("NaT", "us"))).to_pylist()
    by_model = [
        ActivityPayload.model_validate({"type": "note", "occurred_at": m}).to_body()["occurred_at"]
        for m in moments
    ]
    assert written == [*by_model, ""]


# -- calendar days (occurred_at: date_only) --------------------------------------------------


def test_a_bare_date_is_noon_of_that_day_in_the_mapping_timezone_and_says_which():
    # The README's worked example: 03/05/2024 in Chicago (UTC-6 in March, before DST).
    text = DATES % ", formats: ['%m/%d/%Y %I:%M %p', '%m/%d/%Y'], timezone: America/Chicago"
    mapped = map_rows(text, {"C": ["1", "2"], "D": ["03/05/2024", "03/05/2024 11:30 PM"]})
    assert bodies(mapped) == [
        {"type": "note", "occurred_at": "2024-03-05T18:00:00Z", "timezone": "America/Chicago"},
        {"type": "note", "occurred_at": "2024-03-06T05:30:00Z"},  # a moment: as before
    ]


def test_noon_falls_on_the_same_day_far_east_and_west_of_utc():
    for zone, expected in [
        ("Pacific/Auckland", "2024-03-04T23:00:00Z"),  # UTC+13: noon there is 23:00 the day before
        ("Pacific/Honolulu", "2024-03-05T22:00:00Z"),  # UTC-10
    ]:
        mapped = map_rows(DATES % f", timezone: {zone}", {"C": ["1"], "D": ["2024-03-05"]})
        assert bodies(mapped)[0]["occurred_at"] == expected


def test_date_only_false_keeps_local_midnight():
    text = DATES % ", timezone: America/Chicago, date_only: false"
    mapped = map_rows(text, {"C": ["1"], "D": ["2024-03-05"]})
    assert bodies(mapped) == [{"type": "note", "occurred_at": "2024-03-05T06:00:00Z"}]


def test_date_only_true_drops_a_written_time_of_day():
    text = DATES % ", timezone: Europe/Berlin, date_only: true"
    mapped = map_rows(text, {"C": ["1", "2"], "D": ["2024-07-01 23:30", "2024-07-02"]})
    assert [b["occurred_at"] for b in bodies(mapped)] == [
        "2024-07-01T10:00:00Z",  # noon in Berlin (UTC+2 in July)
        "2024-07-02T10:00:00Z",
    ]


def test_a_mapped_timezone_field_is_left_as_the_mapping_says():
    text = DATES % ", timezone: America/Chicago" + "  timezone: {value: America/Denver}\n"
    mapped = map_rows(text, {"C": ["1"], "D": ["2024-03-05"]})
    assert bodies(mapped)[0]["timezone"] == "America/Denver"


# -- map: else, and a column that falls back to others -----------------------------------


MAPPED_TYPE = BASE + "  type:\n    column: T\n    map: {Call: phone_call, Anruf: phone_call}\n"


def test_else_gives_every_unlisted_value_one_value():
    mapped = map_rows(MAPPED_TYPE + "    else: note\n", {"C": ["1", "2"], "T": ["anruf", "Fax"]})
    assert bodies(mapped) == [{"type": "phone_call"}, {"type": "note"}]


def test_else_keep_passes_an_unlisted_value_through_as_without_else():
    for extra in ("", "    else: keep\n"):
        mapped = map_rows(MAPPED_TYPE + extra, {"C": ["1", "2"], "T": ["Call", "email"]})
        assert bodies(mapped) == [{"type": "phone_call"}, {"type": "email"}]


def test_else_invalid_makes_an_unlisted_value_an_error_naming_it():
    text = MAPPED_TYPE + "    else: invalid\n    default: note\n"
    mapped = map_rows(text, {"C": ["1", "2", "3"], "T": ["Call", "email", ""]})
    assert bodies(mapped) == [
        {"type": "phone_call"},
        ["type ('email') is not one of the map's keys (else: invalid)"],
        {"type": "note"},  # a blank is not an unlisted value: default applies
    ]


def test_a_list_of_columns_takes_the_first_that_is_not_blank():
    text = BASE + "  type: {value: note}\n  occurred_at: {column: [ActivityDate, CreatedDate]}\n"
    mapped = map_rows(
        text,
        {
            "C": ["1", "2", "3"],
            "ActivityDate": ["2024-03-05 10:00", " ", ""],
            "CreatedDate": ["2024-01-01T08:00:00Z", "2024-01-02T08:00:00Z", ""],
        },
    )
    assert bodies(mapped) == [
        {"type": "note", "occurred_at": "2024-03-05T10:00:00Z"},
        {"type": "note", "occurred_at": "2024-01-02T08:00:00Z"},
        {"type": "note"},
    ]


def test_an_id_cell_shaped_like_another_key_is_still_checked_as_an_id():
    text = "contact: {id: I, email: E}\nactivity:\n  type: {value: note}\n"
    mapped = map_rows(text, {"I": ["email:a@b.org"], "E": ["c@d.org"]})
    assert mapped[0].errors == [
        "contact id ('email:a@b.org') is not a Givebutter contact id (a number)"
    ]

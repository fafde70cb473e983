"""Properties of the map stage, for any text in any cell (hypothesis).

Whatever a file holds, `Mapper(mapping).map_chunk(frame)` gives one `MappedRow` per row, in
order, and never raises: each row is skipped by a rule, or carries a payload the payload
model accepts and that serialises to strict JSON (no NaN, no Infinity), or carries the
reasons it is invalid.
"""

from __future__ import annotations

import json
import math

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.mapper import Mapper
from importer.mapping import parse_mapping
from importer.payload import ActivityPayload, validate_payload
from importer.read import READ_ERROR_COLUMN
from importer.records import MappedRow

COLUMNS = ("C", "E", "X", "T", "S", "N", "A", "B", "D", "Z")

MAPPINGS = {
    "columns": """
contact: C
activity:
  type: T
  subject: S
  note: N
  occurred_at: D
  timezone: Z
""",
    "template": """
contact: C
activity:
  type: {value: note}
  subject: {template: "{A}: {B}"}
  note: {template: "{N} ({A}, {B})", default: nothing said}
""",
    "map-and-default": """
contact: C
activity:
  type:
    column: T
    map: {Phone Call: phone_call, Text Message: sms, E-mail: email, nan: note}
    default: note
  subject: {column: S, default: (no subject), send_null: true}
  timezone: {column: Z, default: UTC}
""",
    "dates": """
contact: C
activity:
  type: {value: meeting}
  occurred_at:
    column: D
    formats: ["%m/%d/%Y %I:%M %p", "%d.%m.%Y", "%Y-%m-%dT%H:%M:%S%z", "%H:%M"]
    timezone: America/New_York
""",
    "truncate": """
contact: C
activity:
  type: {column: T, default: email}
  subject: {column: S, truncate: 10}
  note: {template: "{N}{A}", truncate: 3}
  timezone: {value: Europe/Berlin}
""",
    "contact-kinds-and-skips": """
contact: {id: C, email: E, external_id: X}
activity:
  type: {value: sms}
  note: {column: N, send_null: true}
skip:
  - {column: S, contains: x}
  - {column: A, in: [nan, NaN, inf]}
  - {column: B, blank: true}
""",
}

# Text that pandas, numpy or JSON might take for something other than text.
TRICKY = [
    "",
    " ",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "-Infinity",
    "1e309",
    "None",
    "null",
    "NA",
    "<NA>",
    "NaT",
    "True",
    "0",
    "00123",
    "10001",
    "-5",
    "45352",
    "note",
    "Phone Call",
    "phone_call",
    "UTC",
    "America/New_York",
    "America",  # a folder of the timezone database, not a zone
    "Not/AZone",
    "../../etc/passwd",
    "2024-03-10 02:30",  # does not exist in New York (clocks go forward)
    "2024-11-03 01:30",  # happens twice in New York
    "03/10/2024 02:30 AM",
    "31.12.1999",
    "2024-02-30",
    "0001-01-01",
    "9999-12-31T23:59:59Z",
    "2024-03-05T14:30:00+14:00",
    "2024-03-05T14:30:00+99:99",
    "2024-03-05T14:30:00-0500",
    "24:00",
    "\x00",
    "\u202eevil",
    "=cmd|' /C calc'!A0",
    "{A}",
    "%s%n",
    "x" * 300,
]

cells = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40),  # no surrogates
    st.builds("".join, st.lists(st.sampled_from(TRICKY), max_size=3)),
)
read_errors = st.one_of(
    st.just(""), st.just(""), st.sampled_from(["row has 9 fields, the header has 7"])
)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """A chunk as the reader hands it on: text cells, spreadsheet row numbers."""
    height = draw(st.integers(min_value=1, max_value=6))
    data = {name: draw(st.lists(cells, min_size=height, max_size=height)) for name in COLUMNS}
    data[READ_ERROR_COLUMN] = draw(st.lists(read_errors, min_size=height, max_size=height))
    first = draw(st.integers(min_value=2, max_value=1_048_576))
    gaps = draw(st.lists(st.integers(1, 3), min_size=height, max_size=height))
    rows = [first + sum(gaps[:i]) for i in range(height)]
    return pd.DataFrame(data, index=rows, dtype=object)


MAPPERS = {name: Mapper(parse_mapping(text, name=name)) for name, text in MAPPINGS.items()}
# How many examples: the profile's (tests/conftest.py: 60 in every run, 1000 when
# HYPOTHESIS_PROFILE=thorough).
PROPERTY = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def check_row(mapped: MappedRow) -> None:
    """Skipped; or a payload the model accepts, as strict JSON; or reasons."""
    if mapped.skipped_by is not None:
        assert mapped.skipped_by.startswith("skip rule ")
        return
    if mapped.payload is None:
        assert mapped.errors
        assert all(isinstance(e, str) and e for e in mapped.errors)
        return
    assert mapped.errors == []
    body = mapped.payload.to_body()
    again = ActivityPayload.model_validate(body)
    assert again.to_body() == body
    text = json.dumps(body, allow_nan=False)
    assert json.loads(text) == body
    for value in body.values():
        assert value is None or isinstance(value, str)
        assert not (isinstance(value, float) and not math.isfinite(value))


mappers = st.sampled_from(list(MAPPERS.values()))


@PROPERTY
@given(mappers, frames())
def test_every_row_gives_exactly_one_mapped_row_in_order(
    mapper: Mapper, frame: pd.DataFrame
) -> None:
    assert [m.row for m in mapper.map_chunk(frame)] == frame.index.to_list()


@PROPERTY
@given(mappers, frames())
def test_every_row_is_skipped_or_a_valid_payload_or_has_reasons(
    mapper: Mapper, frame: pd.DataFrame
) -> None:
    for row in mapper.map_chunk(frame):
        check_row(row)


@PROPERTY
@given(mappers, frames())
def test_a_row_the_reader_found_broken_is_never_sent(mapper: Mapper, frame: pd.DataFrame) -> None:
    broken = frame[READ_ERROR_COLUMN] != ""
    for row, is_broken in zip(mapper.map_chunk(frame), broken, strict=True):
        if is_broken and row.skipped_by is None:
            assert row.payload is None
            assert "row has 9 fields, the header has 7" in row.errors


@PROPERTY
@given(frames())
def test_column_text_is_sent_as_written_only_trimmed(frame: pd.DataFrame) -> None:
    for row, (_, cells_of_row) in zip(
        MAPPERS["columns"].map_chunk(frame), frame.iterrows(), strict=True
    ):
        if row.payload is None:
            continue
        body = row.payload.to_body()
        for field, column in (("subject", "S"), ("note", "N"), ("timezone", "Z")):
            assert body.get(field, "") == cells_of_row[column].strip()


@PROPERTY
@given(frames())
def test_truncated_fields_fit_and_say_so(frame: pd.DataFrame) -> None:
    for row, (_, cells_of_row) in zip(
        MAPPERS["truncate"].map_chunk(frame), frame.iterrows(), strict=True
    ):
        if row.payload is None:
            continue
        body = row.payload.to_body()
        assert len(body.get("subject", "")) <= 10
        assert len(body.get("note", "")) <= 3
        cut = len(cells_of_row["S"].strip()) > 10
        assert any(w.startswith("subject truncated from") for w in row.warnings) == cut


@PROPERTY
@given(frames())
def test_dates_are_sent_in_utc_with_a_z(frame: pd.DataFrame) -> None:
    for row in MAPPERS["dates"].map_chunk(frame):
        if row.payload is not None and "occurred_at" in (body := row.payload.to_body()):
            assert body["occurred_at"].endswith("Z")
            assert row.payload.occurred_at is not None
            assert row.payload.occurred_at.utcoffset() is not None


@PROPERTY
@given(mappers, frames())
def test_checking_column_by_column_says_what_the_payload_model_says_row_by_row(
    mapper: Mapper, frame: pd.DataFrame
) -> None:
    """The dry run never builds a payload: its column-wise checks must refuse exactly the
    rows the model refuses, with the model's words, and render fields as the model does."""
    chunk = mapper.map_columns(frame)
    values = {name: cells.to_pylist() for name, cells in chunk.values.items()}
    for i, body in enumerate(chunk.bodies(range(len(chunk)))):
        if chunk.skipped[i]:
            continue
        payload, reasons = validate_payload(body)
        said = chunk.errors.get(i, [])
        assert all(r in said for r in reasons if not r.startswith("type is required"))
        if payload is None:
            assert said
        else:
            rendered = payload.to_body()
            for name, cells in values.items():
                assert cells[i] == ("" if rendered.get(name) is None else rendered[name])

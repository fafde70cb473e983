"""The results CSV and the summary: one line per row, safe to open in a spreadsheet."""

import csv
import stat

import pytest

from importer.errors import ConfigError
from importer.payload import ActivityPayload
from importer.records import Outcome, Status
from importer.report import RESULT_COLUMNS, ResultsWriter, Summary


def read_back(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_columns_hold_the_outcome_and_the_payload_fields():
    assert RESULT_COLUMNS[:10] == (
        "row",
        "key",
        "contact",
        "contact_id",
        "found_by",
        "status",
        "http_status",
        "activity_id",
        "attempts",
        "error",
    )
    assert set(RESULT_COLUMNS[-5:]) == {"type", "note", "subject", "occurred_at", "timezone"}


def test_each_outcome_is_one_line_in_the_order_given(tmp_path):
    path = tmp_path / "r.csv"
    payload = ActivityPayload(type="note", subject="Hi")
    with ResultsWriter(path) as writer:
        writer.write(
            [
                Outcome(
                    row=3,
                    status=Status.CREATED,
                    contact="7",
                    contact_id=7,
                    payload=payload,
                    http_status=200,
                    activity_id="a1",
                    attempts=1,
                ),
                Outcome(row=2, status=Status.INVALID, contact="x", error="contact id is bad"),
            ]
        )
    lines = read_back(path)
    assert [(r["row"], r["status"], r["activity_id"], r["subject"]) for r in lines] == [
        ("3", "created", "a1", "Hi"),
        ("2", "invalid", "", ""),
    ]


def test_lines_reach_the_disk_before_the_writer_is_closed(tmp_path):
    path = tmp_path / "r.csv"
    writer = ResultsWriter(path)
    writer.write([Outcome(row=n, status=Status.VALID) for n in range(2, 1002)])
    assert len(read_back(path)) >= 500  # flushed in blocks, not only at the end
    writer.close()
    assert len(read_back(path)) == 1000


def contact_cell_as_written(tmp_path, contact):
    path = tmp_path / "r.csv"
    with ResultsWriter(path) as writer:
        writer.write([Outcome(row=2, status=Status.INVALID, contact=contact)])
    return read_back(path)[0]["contact"]


@pytest.mark.parametrize("cell", ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx"])
def test_formula_cells_are_neutralised(tmp_path, cell):
    assert contact_cell_as_written(tmp_path, cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Thanks: gift of $5", "a=b", "x-1", "café", ""])
def test_plain_cells_are_left_alone(tmp_path, cell):
    assert contact_cell_as_written(tmp_path, cell) == cell


def test_formulas_in_the_results_csv_are_neutralised_but_the_payload_is_not(tmp_path):
    path = tmp_path / "r.csv"
    payload = ActivityPayload(type="note", subject='=HYPERLINK("http://x")')
    with ResultsWriter(path) as writer:
        writer.write([Outcome(row=2, status=Status.VALID, payload=payload)])
    assert read_back(path)[0]["subject"] == '\'=HYPERLINK("http://x")'
    assert payload.to_body()["subject"] == '=HYPERLINK("http://x")'


def test_the_results_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "r.csv"
    ResultsWriter(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_results_file_is_not_replaced_without_force(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        ResultsWriter(path)
    assert path.read_text() == "keep me"
    ResultsWriter(path, overwrite=True).close()
    assert path.read_text().startswith("row,")


def test_summary_counts_statuses_and_common_reasons():
    summary = Summary(dry_run=True)
    summary.add(
        [
            Outcome(row=2, status=Status.VALID),
            Outcome(
                row=3, status=Status.INVALID, error="occurred_at ('x') does not match ISO 8601"
            ),
            Outcome(
                row=4,
                status=Status.INVALID,
                error="occurred_at ('y') does not match ISO 8601; contact: C is blank",
            ),
            Outcome(row=5, status=Status.SKIPPED, error="skip rule 1: S equals 'x'"),
        ]
    )
    data = summary.as_dict()
    assert data["counts"] == {"created": 0, "valid": 1, "invalid": 2, "skipped": 1, "failed": 0}
    assert data["top_reasons"][0] == {
        "reason": "occurred_at does not match ISO 8601",
        "rows": 2,
        "example": "x, row 3",
    }
    assert summary.exit_code() == 1


def test_exit_code_is_zero_when_nothing_is_invalid_or_failed():
    summary = Summary(dry_run=False)
    summary.add([Outcome(row=2, status=Status.CREATED), Outcome(row=3, status=Status.SKIPPED)])
    assert summary.exit_code() == 0


def test_exit_code_is_130_when_interrupted():
    summary = Summary(dry_run=False, interrupted=True)
    assert summary.exit_code() == 130


def test_reasons_are_grouped_by_kind_with_a_count_and_an_example():
    summary = Summary(dry_run=False)
    summary.add(
        Outcome(
            row=14 + i, status=Status.INVALID, error=f"no contact with external_id EXT-{92 + i}"
        )
        for i in range(580)
    )
    summary.add(
        [
            Outcome(row=700, status=Status.INVALID, error="no contact with email a b@x.org"),
            Outcome(
                row=701,
                status=Status.INVALID,
                error="2 contacts share email s@x.org (ids 10011, 10012)",
            ),
            Outcome(
                row=702, status=Status.FAILED, error="403 Forbidden: This action is unauthorized."
            ),
        ]
    )
    lines = summary.text().splitlines()
    assert "      580 × no contact with that external_id (e.g. EXT-92, row 14)" in lines
    assert "        1 × no contact with that email (e.g. a b@x.org, row 700)" in lines
    assert "        1 × several contacts share that email (e.g. s@x.org, row 701)" in lines
    assert "        1 × 403 Forbidden: This action is unauthorized. (e.g. row 702)" in lines
    assert len([line for line in lines if " × " in line]) == 4


def test_reasons_of_one_kind_keep_what_follows_the_value():
    from importer.reasons import kind_of

    hint = "no contact with email a@x.org (the mapping can create it: add --create-contacts)"
    assert kind_of(hint) == (
        "no contact with that email (the mapping can create it: add --create-contacts)",
        "a@x.org",
    )
    assert kind_of("contact 10050 (external_id CRM-000050) is archived") == (
        "the contact with that external_id is archived",
        "CRM-000050",
    )
    assert kind_of("contact id ('abc') is not a Givebutter contact id (a number)") == (
        "contact id is not a Givebutter contact id (a number)",
        "abc",
    )

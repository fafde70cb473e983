"""Trial runs: `--limit N` and `--rows 100-250` take only some rows, and read no further.

The selection itself (`importer.selection`) is tested on frames; the options through the
command line, as a dry run and as a real run against the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.cli import main
from importer.selection import EVERY_ROW, RowSelection, parse_rows
from tests.conftest import MAPPINGS, QUICK_RATE, ROOT, SAMPLES, rows_of

DONOR_CSV = SAMPLES / "donor-crm-activities.csv"
DONOR_MAPPING = MAPPINGS / "donor-crm-activities.yaml"
EXPECTED_DRY_RUN = ROOT / "tests" / "expected" / "donor-crm-activities.dry-run.csv"


def frames(*indexes: list[int]) -> Iterator[pd.DataFrame]:
    """Chunks as the read stage gives them: one column, indexed by spreadsheet row."""
    for index in indexes:
        yield pd.DataFrame({"cell": [f"r{i}" for i in index]}, index=index)


def taken(selection: RowSelection, chunks: Iterator[pd.DataFrame]) -> list[int]:
    return [int(row) for chunk in selection.take(chunks) for row in chunk.index]


# -- writing rows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("7", ((7, 7),)),
        ("100-250", ((100, 250),)),
        ("5,9,20-30", ((5, 5), (9, 9), (20, 30))),
        (" 5 , 9 - 12 ", ((5, 5), (9, 12))),
    ],
)
def test_rows_are_written_as_numbers_and_ranges(text, ranges):
    assert parse_rows(text) == ranges


@pytest.mark.parametrize("text", ["", "0", "9-5", "a", "5-", "-5", "1,,2", "3-x", "1.5"])
def test_anything_else_is_refused_saying_which_part(text):
    with pytest.raises(ValueError, match="row"):
        parse_rows(text)


def test_ranges_are_kept_sorted_and_merged():
    selection = RowSelection(ranges=((20, 30), (5, 5), (25, 40), (6, 8)))
    assert selection.ranges == ((5, 8), (20, 40))
    assert selection.last_row == 40


def test_rows_given_one_by_one_become_ranges():
    assert RowSelection.of([40, 12, 13, 14, 13]).ranges == ((12, 14), (40, 40))
    assert RowSelection.of([]).ranges == ()


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        RowSelection(limit=0)


# -- taking rows -------------------------------------------------------------------------


def test_every_row_is_the_default():
    assert taken(EVERY_ROW, frames([2, 3], [4, 6])) == [2, 3, 4, 6]


def test_ranges_take_their_rows_across_chunks():
    selection = RowSelection(ranges=parse_rows("3,5-7"))
    assert taken(selection, frames([2, 3, 4], [5, 6], [7, 8, 9])) == [3, 5, 6, 7]


def test_a_limit_takes_the_first_rows_and_stops_mid_chunk():
    assert taken(RowSelection(limit=3), frames([2, 3], [4, 5, 6])) == [2, 3, 4]


def test_a_limit_counts_the_rows_the_ranges_take():
    selection = RowSelection(ranges=parse_rows("4-100"), limit=3)
    assert taken(selection, frames([2, 3, 4], [5, 7, 8, 9])) == [4, 5, 7]


def test_no_chunk_handed_on_is_empty():
    selection = RowSelection(ranges=parse_rows("9"))
    chunks = list(selection.take(frames([2, 3], [4, 5], [9, 10])))
    assert [list(c.index) for c in chunks] == [[9]]


class CountingChunks:
    """A reader that counts the chunks pulled from it and whether it was closed."""

    def __init__(self, *indexes: list[int]) -> None:
        self.pulled = 0
        self.closed = False
        self._frames = frames(*indexes)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return self

    def __next__(self) -> pd.DataFrame:
        self.pulled += 1
        return next(self._frames)

    def close(self) -> None:
        self.closed = True


def test_reading_stops_once_the_limit_is_reached():
    reader = CountingChunks([2, 3], [4, 5], [6, 7], [8, 9])
    assert taken(RowSelection(limit=3), reader) == [2, 3, 4]
    assert (reader.pulled, reader.closed) == (2, True)


def test_reading_stops_past_the_last_row_of_the_ranges():
    reader = CountingChunks([2, 3], [4, 5], [6, 7], [8, 9])
    assert taken(RowSelection(ranges=parse_rows("3-4")), reader) == [3, 4]
    assert (reader.pulled, reader.closed) == (2, True)


def test_a_reader_left_early_by_its_consumer_is_closed_too():
    reader = CountingChunks([2, 3], [4, 5])
    chunks = EVERY_ROW.take(reader)
    next(chunks)
    assert not reader.closed  # still being read
    chunks.close()
    assert reader.closed


def test_chunks_are_no_bigger_than_the_selection_can_take():
    assert RowSelection(limit=10).chunk_rows(50_000, header_row=1) == 10
    assert RowSelection(ranges=parse_rows("5-30")).chunk_rows(50_000, header_row=1) == 29
    assert RowSelection(ranges=parse_rows("1")).chunk_rows(50_000, header_row=1) == 1
    assert EVERY_ROW.chunk_rows(50_000, header_row=3) == 50_000


@given(
    chunk_rows=st.lists(st.integers(1, 7), min_size=1, max_size=8),
    gaps=st.lists(st.integers(1, 3), min_size=60, max_size=60),
    wanted=st.lists(st.integers(1, 150), max_size=30),
    limit=st.none() | st.integers(1, 40),
)
def test_taking_equals_a_plain_filter_of_every_row(chunk_rows, gaps, wanted, limit):
    numbers = (1 + np.cumsum(gaps)).tolist()  # row numbers skip where blank lines were
    indexes, start = [], 0
    while start < len(numbers):
        size = chunk_rows[len(indexes) % len(chunk_rows)]
        indexes.append(numbers[start : start + size])
        start += size
    selection = RowSelection(ranges=RowSelection.of(wanted).ranges, limit=limit)
    expected = [n for n in numbers if n in set(wanted)][:limit]
    assert taken(selection, frames(*indexes)) == expected


# -- through the command line: dry runs --------------------------------------------------


def dry_run(tmp_path: Path, *flags: str, input_path: Path = DONOR_CSV) -> tuple[int, Path]:
    results = tmp_path / "results.csv"
    argv = ["run", str(input_path), "-m", str(DONOR_MAPPING), "--dry-run", "-q"]
    return main([*argv, "--results", str(results), "--force", *flags]), results


def expected_lines(rows: set[int]) -> list[dict[str, str]]:
    return [line for line in rows_of(EXPECTED_DRY_RUN) if int(line["row"]) in rows]


def test_a_dry_run_with_a_limit_has_the_first_n_rows_exactly(tmp_path, capsys):
    code, results = dry_run(tmp_path, "--limit", "5")
    assert code == 0
    assert rows_of(results) == expected_lines({2, 3, 4, 5, 6})
    assert "5 rows in" in capsys.readouterr().err


def test_a_dry_run_of_some_rows_has_those_lines_and_no_others(tmp_path):
    code, results = dry_run(tmp_path, "--rows", "5,13,20-25,299-400")
    assert code == 1  # row 13 is invalid on purpose
    assert rows_of(results) == expected_lines({5, 13, *range(20, 26), 299, 300, 301})


def test_limit_and_rows_together_take_the_first_n_of_those_rows(tmp_path):
    _, results = dry_run(tmp_path, "--rows", "100-250", "--limit", "3")
    assert [line["row"] for line in rows_of(results)] == ["100", "101", "102"]


def test_rows_that_are_not_data_rows_give_an_empty_results_file(tmp_path):
    code, results = dry_run(tmp_path, "--rows", "1,5000-6000")
    assert code == 0
    assert rows_of(results) == []


@pytest.mark.parametrize(("flag", "value"), [("--rows", "9-5"), ("--rows", "x"), ("--limit", "0")])
def test_a_bad_selection_is_a_usage_error(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as stopped:
        dry_run(tmp_path, flag, value)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


def test_a_limited_run_never_reads_the_rest_of_the_file(tmp_path, capsys):
    """The file breaks (a NUL byte) far below the rows taken: a whole run stops there with
    exit 2, a run limited to its first rows never gets that far."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text("contact: Contact\nactivity:\n  type: Type\n  occurred_at: Date\n")
    big = tmp_path / "big.csv"
    good = "".join(f"{10001 + i % 40},note,2024-03-05\n" for i in range(150_000))
    big.write_text(f"Contact,Type,Date\n{good}10001,no\x00te,2024-03-05\n", encoding="utf-8")
    argv = ["run", str(big), "-m", str(mapping), "--dry-run", "-q", "--force"]
    results = tmp_path / "r.csv"
    assert main([*argv, "--results", str(results)]) == 2
    assert "NUL byte" in capsys.readouterr().err
    assert main([*argv, "--results", str(results), "--limit", "10"]) == 0
    assert [line["row"] for line in rows_of(results)] == [str(n) for n in range(2, 12)]
    assert main([*argv, "--results", str(results), "--rows", "30-40"]) == 0
    assert len(rows_of(results)) == 11


# -- through the command line: real runs against the sandbox -----------------------------


def send(sandbox, tmp_path: Path, name: str, *flags: str) -> tuple[int, list[dict[str, str]]]:
    results = tmp_path / f"{name}.csv"
    argv = ["run", str(DONOR_CSV), "-m", str(DONOR_MAPPING), "--base-url", sandbox.base_url]
    ledger = ["--ledger", str(tmp_path / "ledger.sqlite")]
    code = main([*argv, *ledger, "--rate", QUICK_RATE, "-q", "--results", str(results), *flags])
    return code, rows_of(results)


def test_a_real_run_of_some_rows_sends_those_rows_only(sandbox, tmp_path):
    code, lines = send(sandbox, tmp_path, "trial", "--rows", "80-99")
    assert [int(line["row"]) for line in lines] == list(range(80, 100))
    by_row = {int(line["row"]): line for line in lines}
    assert by_row[83]["status"] == "skipped"
    assert (by_row[85]["status"], by_row[85]["http_status"]) == ("failed", "403")
    assert (by_row[97]["status"], by_row[97]["http_status"]) == ("failed", "404")
    created = [line for line in lines if line["status"] == "created"]
    assert len(created) == 17 and code == 1
    stored = {a.id: a for a in sandbox.store.all_activities()}
    assert set(stored) == {line["activity_id"] for line in created}
    for line in created:
        activity = stored[line["activity_id"]]
        assert (str(activity.contact_id), activity.subject) == (line["contact_id"], line["subject"])


def test_a_trial_run_then_the_whole_file_sends_every_row_once(sandbox, tmp_path):
    code, trial = send(sandbox, tmp_path, "trial", "--limit", "10")
    assert code == 0
    assert [line["row"] for line in trial] == [str(n) for n in range(2, 12)]
    assert [line["status"] for line in trial] == ["created"] * 10
    assert sandbox.store.count_activities() == 10
    _, whole = send(sandbox, tmp_path, "whole")
    by_row = {int(line["row"]): line for line in whole}
    assert len(whole) == 300
    assert {by_row[n]["status"] for n in range(2, 12)} == {"skipped"}
    assert sum(line["status"] == "created" for line in whole) == 287 - 10
    assert sandbox.store.count_activities() == 287


def test_a_trial_run_cannot_mirror_deletions(tmp_path, capsys):
    code, results = dry_run(tmp_path, "--limit", "5", "--delete-missing")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "givebutter-import: error: --delete-missing mirrors a whole file: not with "
        "--limit or --rows"
    ]
    assert not results.exists()

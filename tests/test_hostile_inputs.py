"""Hostile input files, end to end through the CLI: each is refused with one clear line
(exit 2) or read with every row in the results exactly once (exit 0 or 1).

The corpus is `tests/hostile/` (its README.md has the table of what is accepted and what is
refused); large cases are built into tmp_path by `tests/hostile/make_corpus.py`.
"""

from __future__ import annotations

import contextlib
import csv
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import importer.layout
import importer.read.workbook
from importer.cli import main
from importer.sandbox import SandboxSettings, sandbox_in_thread
from tests.conftest import QUICK_RATE
from tests.hostile import make_corpus
from tests.hostile.make_corpus import EMOJI_RTL, ENCODINGS, FORMULA_TEXTS, GOOD_ROWS

HOSTILE = Path(__file__).resolve().parent / "hostile"
MAPPING = HOSTILE / "mapping.yaml"
GIB = 2**30


@dataclass
class Run:
    """What one CLI run left behind."""

    code: int
    stdout: str
    stderr: str
    results: list[dict[str, str]]  # the results CSV's lines ([] if there is none)

    def rows(self) -> list[int]:
        return [int(line["row"]) for line in self.results]

    def line(self, row: int) -> dict[str, str]:
        (found,) = [line for line in self.results if line["row"] == str(row)]
        return found


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a results line may hold a 50 MB note
    try:
        with path.open(newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))
    finally:
        csv.field_size_limit(limit)


@pytest.fixture
def dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `givebutter-import run INPUT --dry-run` in-process; no traceback may escape."""

    def run(path: Path, *, mapping: Path = MAPPING) -> Run:
        results = tmp_path / f"{path.name}-results.csv"
        argv = ["run", str(path), "--mapping", str(mapping), "--dry-run"]
        code = main([*argv, "--results", str(results), "-q"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert "unexpected error" not in err
        return Run(code, out, err, read_results(results))

    return run


def assert_refused(run: Run, *phrases: str) -> None:
    """Exit 2 with one line on stderr that says why, and no row written twice."""
    assert run.code == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("givebutter-import: error: ")
    for phrase in phrases:
        assert phrase in lines[0]
    assert len(run.rows()) == len(set(run.rows()))


def assert_rows(run: Run, rows: list[int], *, code: int) -> None:
    """The run finished with `code`, and every data row is in the results exactly once."""
    assert run.code == code, run.stderr
    assert run.rows() == rows


def case(name: str) -> Path:
    return HOSTILE / name


@contextlib.contextmanager
def peak_memory_below(limit: int) -> Iterator[None]:
    """Fail if this process's peak resident memory is above `limit` bytes afterwards.

    A loose check (the peak is the process's, since it started): enough to tell a bounded
    read from one that inflated a gigabyte.
    """
    yield
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    assert peak < limit, f"peak memory {peak / GIB:.2f} GiB"


# -- the corpus itself --------------------------------------------------------------------------


def test_the_committed_corpus_is_what_make_corpus_writes() -> None:
    for name, build in make_corpus.SMALL.items():
        assert (HOSTILE / name).read_bytes() == build(), f"rerun make_corpus.py for {name}"


def test_every_committed_case_is_in_the_readme_table() -> None:
    table = (HOSTILE / "README.md").read_text(encoding="utf-8")
    missing = [name for name in make_corpus.SMALL if f"`{name}`" not in table]
    assert missing == []


# -- truncated files ----------------------------------------------------------------------------


def test_a_file_cut_mid_row_makes_its_last_row_invalid(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("truncated-mid-row.csv"))
    assert_rows(run, [2, 3, 4, 5], code=1)
    assert run.line(5)["status"] == "invalid"
    assert "the file ends in this row, after 4 of 5 fields" in run.line(5)["error"]


def test_a_last_row_with_every_field_but_no_line_break_is_whole(
    dry_run: Callable[..., Run], tmp_path: Path
) -> None:
    path = tmp_path / "no-final-newline.csv"
    path.write_text(make_corpus.csv_text(GOOD_ROWS).rstrip("\n"), encoding="utf-8")
    run = dry_run(path)
    assert_rows(run, [2, 3, 4], code=0)


def test_a_file_cut_inside_a_quoted_cell_is_refused_naming_the_row(
    dry_run: Callable[..., Run],
) -> None:
    run = dry_run(case("truncated-mid-quote.csv"))
    assert_refused(run, "row 5 opens a quoted cell that is never closed")


# -- bytes that are not text --------------------------------------------------------------------


def test_a_nul_byte_is_refused(dry_run: Callable[..., Run]) -> None:
    assert_refused(dry_run(case("nul-byte.csv")), "contains NUL bytes")


def test_a_nul_byte_past_the_sampled_start_is_refused_naming_its_line(
    dry_run: Callable[..., Run], tmp_path: Path
) -> None:
    run = dry_run(make_corpus.write_late_nul(tmp_path / "late-nul.csv", rows=30_000))
    assert_refused(run, "line 30002 holds a NUL byte")


# -- layout -------------------------------------------------------------------------------------


def test_mixed_line_endings_give_one_row_each(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("mixed-line-endings.csv"))
    assert_rows(run, [2, 3, 4, 5], code=0)
    assert run.line(5)["note"] == "one\r\ntwo"


def test_a_header_repeated_mid_file_is_an_invalid_row(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("header-repeated.csv"))
    assert_rows(run, [2, 3, 4, 5], code=1)
    assert [line["status"] for line in run.results] == ["valid", "valid", "invalid", "valid"]
    error = run.line(4)["error"]
    assert "contact id ('Contact ID') is not a Givebutter contact id" in error
    assert "type ('Type') is not one of" in error


def test_duplicate_column_names_are_refused(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("duplicate-columns.csv"))
    assert_refused(run, "the header repeats column names: 'Notes' (columns 4, 6)")


def test_a_50_mb_cell_is_read_whole(dry_run: Callable[..., Run], tmp_path: Path) -> None:
    size = 50 * 2**20
    path = make_corpus.write_big_cell(tmp_path / "big-cell.csv", size=size)
    with peak_memory_below(3 * GIB):
        run = dry_run(path)
    assert_rows(run, [2, 3, 4], code=0)
    note = run.line(3)["note"]
    assert len(note) == size
    assert note.startswith("Long note, xxx")
    assert note.endswith("x\nthe end.")


def test_10000_columns_are_read(dry_run: Callable[..., Run], tmp_path: Path) -> None:
    run = dry_run(make_corpus.write_wide(tmp_path / "wide.csv", columns=10_000, rows=5))
    assert_rows(run, [2, 3, 4, 5, 6], code=0)
    assert run.line(6)["subject"] == GOOD_ROWS[1][2]


def run_with_memory_cap(argv: list[str], cap: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process whose address space may not grow beyond `cap` bytes."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [sys.executable, "-m", "importer", *argv]
    return subprocess.run(
        command, cwd=cwd, preexec_fn=limit, capture_output=True, text=True, timeout=120
    )


def test_a_ragged_row_of_a_million_fields_is_one_invalid_line_in_bounded_memory(
    tmp_path: Path,
) -> None:
    # Issue 14: the widest record of the first MiB set the width of every row, so this
    # 1 MiB file needed tens of GB. 1.5 GB of address space is ample for an ordinary run.
    path = make_corpus.write_ragged(tmp_path / "ragged.csv", commas=1_000_000, rows=900)
    results = tmp_path / "results.csv"
    argv = ["run", str(path), "--mapping", str(MAPPING), "--dry-run", "--results", str(results)]
    done = run_with_memory_cap([*argv, "-q"], int(1.5 * GIB), tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1, done.stderr
    lines = read_results(results)
    assert [int(line["row"]) for line in lines] == list(range(2, 906))
    assert [line["row"] for line in lines if line["status"] == "invalid"] == ["5"]
    assert lines[3]["error"] == "row has 1000005 fields, the header has 5"


def test_init_reads_a_ragged_row_of_a_million_fields_in_bounded_memory(tmp_path: Path) -> None:
    path = make_corpus.write_ragged(tmp_path / "ragged.csv", commas=1_000_000, rows=900)
    done = run_with_memory_cap(["init", str(path)], int(1.5 * GIB), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "activity:" in done.stdout  # a starter mapping, each column used or listed unused
    assert all(name in done.stdout for name in make_corpus.HEADER)


# -- workbooks that are not what they say -------------------------------------------------------


@pytest.fixture
def sheet_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every workbook whose sheet the reader asks calamine (or openpyxl) to load."""
    loads: list[Path] = []
    load = importer.read.workbook._load_sheet

    def counted(path: Path, choice: str | int | None) -> importer.read.workbook._Sheet:
        loads.append(path)
        return load(path, choice)

    monkeypatch.setattr(importer.read.workbook, "_load_sheet", counted)
    return loads


def test_a_zip_bomb_workbook_is_refused_before_it_is_inflated(
    dry_run: Callable[..., Run], tmp_path: Path, sheet_loads: list[Path]
) -> None:
    path = make_corpus.write_zip_bomb(tmp_path / "bomb.xlsx", expanded=GIB)
    run = dry_run(path)
    assert_refused(run, "refused as a possible zip bomb", "xl/worksheets/sheet1.xml")
    assert sheet_loads == []


def test_a_zip_bomb_that_understates_its_size_is_refused_within_bounded_memory(
    dry_run: Callable[..., Run], tmp_path: Path
) -> None:
    path = make_corpus.write_zip_bomb(tmp_path / "lying-bomb.xlsx", expanded=GIB, lie=True)
    started = time.monotonic()
    with peak_memory_below(3 * GIB):  # inflated and parsed, the sheet would take about 3 GiB
        run = dry_run(path)
    assert_refused(run, "cannot be read as a workbook", "larger than its declared")
    assert time.monotonic() - started < 10


def test_a_workbook_inflating_past_2_gib_in_small_parts_is_refused(
    dry_run: Callable[..., Run], tmp_path: Path, sheet_loads: list[Path]
) -> None:
    run = dry_run(make_corpus.write_many_parts(tmp_path / "many-parts.xlsx", parts=2100))
    assert_refused(run, "inflates to 2,202,012,350 bytes, more than 2 GiB")
    assert sheet_loads == []


def test_init_refuses_a_zip_bomb_before_looking_at_its_sheets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[Path] = []
    monkeypatch.setattr(importer.layout, "_look_at_sheets", lambda p, _: looked.append(p))
    path = make_corpus.write_zip_bomb(tmp_path / "bomb.xlsx", expanded=GIB)
    assert main(["init", str(path)]) == 2
    assert "refused as a possible zip bomb" in capsys.readouterr().err
    assert looked == []


def test_a_csv_named_xlsx_is_refused_saying_to_name_it_csv(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("csv-named.xlsx"))
    assert_refused(run, "is text, not a .xlsx workbook: if it is CSV, name it .csv")


def test_a_password_protected_workbook_is_refused(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("encrypted.xlsx"))
    assert_refused(run, "the workbook is password-protected")


def test_a_password_protected_workbook_named_xls_is_refused(
    dry_run: Callable[..., Run], tmp_path: Path
) -> None:
    path = tmp_path / "encrypted.xls"
    shutil.copy(case("encrypted.xlsx"), path)
    assert_refused(dry_run(path), "the workbook is password-protected")


# -- formulas -----------------------------------------------------------------------------------


def test_a_formula_cell_gives_its_cached_value(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("formula-cells.xlsx"))
    assert_rows(run, [2, 3, 4, 5], code=0)
    assert run.line(2)["subject"] == "Gala call"


def test_a_formula_cell_with_an_error_result_is_blank(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("formula-cells.xlsx"))
    assert run.line(4)["status"] == "valid"
    assert run.line(4)["subject"] == ""


def test_a_formula_cell_without_a_cached_value_is_blank(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("formula-cells.xlsx"))
    assert run.line(5)["status"] == "valid"
    assert run.line(5)["note"] == ""


def test_formula_text_in_a_workbook_is_neutralised_in_the_results(
    dry_run: Callable[..., Run],
) -> None:
    run = dry_run(case("formula-cells.xlsx"))
    assert run.line(3)["note"] == "'=cmd|' /C calc'!A0"


def test_formula_text_in_a_csv_is_neutralised_in_the_results(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("formula-text.csv"))
    assert_rows(run, [2, 3, 4, 5, 6], code=0)
    assert [line["note"] for line in run.results] == ["'" + text for text in FORMULA_TEXTS]


@pytest.fixture
def sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Path], dict[int, tuple[str | None, str | None]]]:
    """Import a file into a fresh sandbox; give (subject, note) of what it stored, by contact."""

    def send(path: Path) -> dict[int, tuple[str | None, str | None]]:
        monkeypatch.setenv("HOME", str(tmp_path))  # a default ledger lands here, not in ~
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        with sandbox_in_thread(SandboxSettings(limits=())) as sandbox:
            monkeypatch.setenv("GIVEBUTTER_API_KEY", sandbox.api_key)
            argv = ["run", str(path), "--mapping", str(MAPPING), "-q", "--rate", QUICK_RATE]
            argv += ["--base-url", sandbox.base_url, "--results", str(tmp_path / "sent.csv")]
            code = main(argv)
            stored = {
                contact: (activity.subject, activity.note)
                for contact in sandbox.store.activity_counts()
                for activity in sandbox.store.list_activities(contact)[0]
            }
        assert code == 0, capsys.readouterr().err
        return stored

    return send


def test_formula_text_is_sent_unchanged(
    sent: Callable[[Path], dict[int, tuple[str | None, str | None]]],
) -> None:
    stored = sent(case("formula-text.csv"))
    assert [stored[10001 + i][1] for i in range(len(FORMULA_TEXTS))] == list(FORMULA_TEXTS)


# -- dates --------------------------------------------------------------------------------------


def test_an_excel_serial_in_a_text_date_column_is_an_invalid_row(
    dry_run: Callable[..., Run],
) -> None:
    run = dry_run(case("excel-serial-dates.csv"))
    assert_rows(run, [2, 3, 4], code=1)
    assert run.line(2)["error"] == "occurred_at ('45352') does not match '%m/%d/%Y' or ISO 8601"
    assert run.line(3)["status"] == "invalid"
    assert run.line(4)["status"] == "valid"


def test_a_plain_number_in_a_workbook_date_column_is_not_read_as_a_date(
    dry_run: Callable[..., Run],
) -> None:
    run = dry_run(case("serial-dates.xlsx"))
    assert_rows(run, [2, 3], code=1)
    assert run.line(2)["error"] == "occurred_at ('45352') does not match '%m/%d/%Y' or ISO 8601"


def test_a_date_formatted_workbook_cell_is_a_day_in_the_mapping_timezone(
    dry_run: Callable[..., Run],
) -> None:
    run = dry_run(case("serial-dates.xlsx"))
    assert run.line(3)["occurred_at"] == "2024-03-01T17:00:00Z"  # noon in New York
    assert run.line(3)["timezone"] == "America/New_York"


# -- text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_detected_encoding_reads_the_same_text(
    dry_run: Callable[..., Run], name: str
) -> None:
    run = dry_run(case(f"encoding-{name}"))
    assert_rows(run, [2], code=0)
    assert run.line(2)["note"] == ENCODINGS[name][2]


def test_emoji_and_rtl_text_reach_the_results_unchanged(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("emoji-rtl.csv"))
    assert_rows(run, [2, 3, 4], code=0)
    assert [(line["subject"], line["note"]) for line in run.results] == [
        (subject, note) for _, _, subject, note, _ in EMOJI_RTL
    ]


def test_emoji_and_rtl_text_are_sent_unchanged(
    sent: Callable[[Path], dict[int, tuple[str | None, str | None]]],
) -> None:
    stored = sent(case("emoji-rtl.csv"))
    assert [stored[int(contact)] for contact, *_ in EMOJI_RTL] == [
        (subject, note) for _, _, subject, note, _ in EMOJI_RTL
    ]


# -- hostile mappings ---------------------------------------------------------------------------


def test_a_mapping_with_more_aliases_than_allowed_is_refused(dry_run: Callable[..., Run]) -> None:
    run = dry_run(case("formula-text.csv"), mapping=case("alias-bomb.yaml"))
    assert_refused(run, "uses more than 100 YAML aliases")


def test_a_billion_laughs_within_the_alias_limit_is_refused_at_once(
    dry_run: Callable[..., Run],
) -> None:
    started = time.monotonic()
    run = dry_run(case("formula-text.csv"), mapping=case("laughs-within-limit.yaml"))
    assert_refused(run, "laughs-within-limit.yaml: ")
    assert time.monotonic() - started < 5


def test_a_yaml_python_tag_is_refused_and_never_run(
    dry_run: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = dry_run(case("formula-text.csv"), mapping=case("python-tag.yaml"))
    assert_refused(run, "not valid YAML: could not determine a constructor", "python/object")
    assert not (tmp_path / "PWNED").exists()

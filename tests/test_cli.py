"""The command line, end to end, on real files: dry runs, checks, init, exit codes."""

import json

import pytest

from importer.cli import main
from tests.conftest import MAPPINGS, ROOT, SAMPLES, rows_of

EXPECTED = ROOT / "tests" / "expected"
SAMPLE_FILES = {
    "donor-crm-activities": SAMPLES / "donor-crm-activities.csv",
    "salesforce-activities": SAMPLES / "salesforce-activities.xlsx",
}
SIMPLE_MAPPING = "contact: Contact\nactivity:\n  type: Type\n  occurred_at: Date\n"


def dry_run(tmp_path, input_path, mapping_path, *extra):
    results = tmp_path / "results.csv"
    code = main(
        [
            "run",
            str(input_path),
            "--mapping",
            str(mapping_path),
            "--dry-run",
            "--results",
            str(results),
            "-q",
            *extra,
        ]
    )
    return code, results


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def simple_mapping(tmp_path):
    return write(tmp_path / "m.yaml", SIMPLE_MAPPING)


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_dry_run_of_each_sample_matches_its_expected_results_exactly(tmp_path, name):
    code, results = dry_run(tmp_path, SAMPLE_FILES[name], MAPPINGS / f"{name}.yaml")
    assert code == 1  # each sample holds rows that are invalid on purpose
    expected = (EXPECTED / f"{name}.dry-run.csv").read_text(encoding="utf-8")
    assert results.read_text(encoding="utf-8") == expected


def test_the_sample_dry_run_reports_the_deliberately_bad_rows(tmp_path):
    _, results = dry_run(
        tmp_path, SAMPLE_FILES["donor-crm-activities"], MAPPINGS / "donor-crm-activities.yaml"
    )
    by_row = {int(r["row"]): r for r in rows_of(results)}
    assert by_row[13]["error"] == "contact: Givebutter Contact ID is blank"
    assert by_row[25]["status"] == "invalid" and "N/A" in by_row[25]["error"]
    assert "Carrier Pigeon" in by_row[37]["error"]
    assert "31/02/2024" in by_row[49]["error"]
    assert by_row[61]["status"] == "valid" and "truncated" in by_row[61]["warning"]
    assert by_row[73]["occurred_at"] == "2024-06-01T13:30:00Z"
    assert by_row[109]["type"] == "note"


def test_results_have_one_line_per_input_row_in_order(tmp_path):
    _, results = dry_run(
        tmp_path, SAMPLE_FILES["donor-crm-activities"], MAPPINGS / "donor-crm-activities.yaml"
    )
    rows = [int(r["row"]) for r in rows_of(results)]
    assert rows == list(range(2, 302))


def test_all_valid_rows_exit_zero(tmp_path, simple_mapping):
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,2024-01-01\n2,sms,\n")
    code, results = dry_run(tmp_path, data, simple_mapping)
    assert code == 0 and [r["status"] for r in rows_of(results)] == ["valid", "valid"]


def test_summary_json_holds_the_counts(tmp_path, simple_mapping):
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,2024-01-01\nx,sms,\n")
    summary = tmp_path / "summary.json"
    code, _ = dry_run(tmp_path, data, simple_mapping, "--summary-json", str(summary))
    body = json.loads(summary.read_text())
    assert code == 1 and body["counts"]["valid"] == 1 and body["counts"]["invalid"] == 1
    assert body["exit_code"] == 1 and body["rows"] == 2


def test_an_existing_results_file_is_refused_without_force(tmp_path, simple_mapping, capsys):
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,\n")
    (tmp_path / "results.csv").write_text("old")
    code, results = dry_run(tmp_path, data, simple_mapping)
    assert code == 2 and results.read_text() == "old"
    assert "already exists (use --force" in capsys.readouterr().err
    assert dry_run(tmp_path, data, simple_mapping, "--force")[0] == 0


def test_the_results_path_may_not_be_the_input(tmp_path, simple_mapping, capsys):
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,\n")
    code = main(
        ["run", str(data), "-m", str(simple_mapping), "--dry-run", "--results", str(data), "-q"]
    )
    assert code == 2 and "results path is the input" in capsys.readouterr().err
    assert data.read_text() == "Contact,Type,Date\n1,note,\n"


# -- bad input: a clear run-level error (exit 2) or invalid lines, never a traceback --------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a text file"),
        ("nothing.xlsx", b"Contact,Type\n1,note\n", ""),
    ],
)
def test_unreadable_inputs_stop_with_one_line(
    tmp_path, simple_mapping, capsys, name, content, message
):
    path = tmp_path / name
    path.write_bytes(content)
    code, _ = dry_run(tmp_path, path, simple_mapping)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert message in err


def test_header_only_is_an_empty_run(tmp_path, simple_mapping):
    code, results = dry_run(
        tmp_path, write(tmp_path / "in.csv", "Contact,Type,Date\n"), simple_mapping
    )
    assert code == 0 and rows_of(results) == []


def test_ragged_rows_are_invalid_and_the_others_go_through(tmp_path, simple_mapping):
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,,extra,more\n2\n3,sms,\n")
    code, results = dry_run(tmp_path, data, simple_mapping)
    statuses = [(r["row"], r["status"]) for r in rows_of(results)]
    assert code == 1 and statuses == [("2", "invalid"), ("3", "invalid"), ("4", "valid")]


def test_an_unclosed_quote_is_a_clear_error(tmp_path, simple_mapping, capsys):
    data = write(tmp_path / "in.csv", 'Contact,Type,Date\n1,note,\n2,"sms,\n3,note,\n')
    code, _ = dry_run(tmp_path, data, simple_mapping)
    assert code == 2 and "never closed" in capsys.readouterr().err


def test_an_unknown_encoding_name_is_a_clear_error(tmp_path, capsys):
    mapping = write(tmp_path / "m.yaml", "source: {encoding: klingon}\n" + SIMPLE_MAPPING)
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,\n")
    code, _ = dry_run(tmp_path, data, mapping)
    assert code == 2 and "klingon" in capsys.readouterr().err


def test_a_missing_sheet_names_the_sheets_that_exist(tmp_path, capsys):
    mapping = write(tmp_path / "m.yaml", "source: {sheet: Nope}\n" + SIMPLE_MAPPING)
    code, _ = dry_run(tmp_path, SAMPLE_FILES["salesforce-activities"], mapping)
    err = capsys.readouterr().err
    assert code == 2 and "Nope" in err and "Activities" in err


def test_a_header_without_a_mapped_column_names_it(tmp_path, simple_mapping, capsys):
    data = write(tmp_path / "in.csv", "Contact,Kind,Date\n1,note,\n")
    code, _ = dry_run(tmp_path, data, simple_mapping)
    assert code == 2 and "the input has no column 'Type'" in capsys.readouterr().err


def test_a_cp1252_export_is_read(tmp_path, simple_mapping):
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,\n", encoding="cp1252")
    mapping = write(tmp_path / "m2.yaml", SIMPLE_MAPPING + "  subject: {value: Café}\n")
    code, results = dry_run(tmp_path, data, mapping)
    assert code == 0 and rows_of(results)[0]["subject"] == "Café"
    del simple_mapping


def test_a_bad_mapping_stops_before_reading(tmp_path, capsys):
    mapping = write(tmp_path / "m.yaml", "contact: C\nactivity:\n  type: {value: fax}\n")
    code, _ = dry_run(tmp_path, SAMPLE_FILES["donor-crm-activities"], mapping)
    err = capsys.readouterr().err
    assert code == 2 and "activity → type: 'fax' is not an activity type" in err


def test_sending_without_a_key_stops_before_reading(tmp_path, simple_mapping, capsys, monkeypatch):
    monkeypatch.delenv("GIVEBUTTER_API_KEY", raising=False)
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,\n")
    code = main(
        ["run", str(data), "-m", str(simple_mapping), "--results", str(tmp_path / "r.csv"), "-q"]
    )
    assert code == 2 and "no API key: set GIVEBUTTER_API_KEY" in capsys.readouterr().err


def test_plain_http_to_a_remote_host_is_refused(tmp_path, simple_mapping, capsys, monkeypatch):
    monkeypatch.setenv("GIVEBUTTER_API_KEY", "k")
    data = write(tmp_path / "in.csv", "Contact,Type,Date\n1,note,\n")
    code = main(
        [
            "run",
            str(data),
            "-m",
            str(simple_mapping),
            "--results",
            str(tmp_path / "r.csv"),
            "-q",
            "--base-url",
            "http://api.example.org/v1",
        ]
    )
    assert code == 2 and "http" in capsys.readouterr().err


# -- check and init ------------------------------------------------------------------------


def test_check_accepts_a_mapping_that_fits_the_input(capsys):
    code = main(
        [
            "check",
            "--mapping",
            str(MAPPINGS / "salesforce-activities.yaml"),
            str(SAMPLE_FILES["salesforce-activities"]),
        ]
    )
    assert code == 0 and "fits" in capsys.readouterr().out


def test_check_of_a_bad_mapping_exits_two(tmp_path, capsys):
    mapping = write(tmp_path / "m.yaml", "contact: C\nactivity: {type: T, colour: red}\n")
    assert main(["check", "--mapping", str(mapping)]) == 2
    assert "activity → colour: unknown key" in capsys.readouterr().err


def test_init_guesses_a_mapping_that_checks_and_runs(tmp_path, capsys):
    assert main(["init", str(SAMPLE_FILES["donor-crm-activities"])]) == 0
    mapping = write(tmp_path / "guessed.yaml", capsys.readouterr().out)
    text = mapping.read_text()
    assert "id: Givebutter Contact ID" in text and "column: Channel" in text
    assert "Phone Call: phone_call" in text and "%m/%d/%Y %I:%M %p" in text
    code, results = dry_run(tmp_path, SAMPLE_FILES["donor-crm-activities"], mapping)
    assert code == 1 and sum(r["status"] == "valid" for r in rows_of(results)) > 250


def test_the_results_contact_column_holds_the_cell_as_written(tmp_path):
    data = write(tmp_path / "in.csv", "GB,Email,Type\n10001,,note\n, Ann@Example.org ,note\n")
    mapping = write(
        tmp_path / "m.yaml", "contact: {id: GB, email: Email}\nactivity: {type: Type}\n"
    )
    code, results = dry_run(tmp_path, data, mapping)
    assert code == 0
    assert [(r["contact"], r["found_by"]) for r in rows_of(results)] == [
        ("10001", "id"),
        ("Ann@Example.org", ""),  # trimmed, not yet looked up (a plain dry run)
    ]


def test_check_names_the_key_of_a_column_the_input_lacks(tmp_path, capsys):
    data = write(tmp_path / "in.csv", "Email,Type\na@b.org,note\n")
    mapping = write(tmp_path / "m.yaml", "contact: {id: CHANGE ME}\nactivity: {type: Type}\n")
    assert main(["check", "--mapping", str(mapping), str(data)]) == 2
    assert "contact → id: the input has no column 'CHANGE ME'" in capsys.readouterr().err


def test_check_warns_about_a_field_every_row_leaves_blank(tmp_path, capsys):
    data = write(
        tmp_path / "in.csv", "GB,Type,Subject,Notes,Status\n1,note,,x,\n2,email, ,,Cancelled\n"
    )
    mapping = write(
        tmp_path / "m.yaml",
        "contact: GB\nactivity: {type: Type, subject: Subject, note: Notes}\n"
        "skip: [{column: Status, equals: Cancelled}]\n",
    )
    assert main(["check", "--mapping", str(mapping), str(data)]) == 0
    captured = capsys.readouterr()
    assert "fits" in captured.out and "2 rows" in captured.out
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert warnings == [
        f"givebutter-import: warning: {mapping}: activity → subject: blank in every row "
        "(column 'Subject')"
    ]  # Notes is filled in row 2 only, and row 3 is skipped: not all blank

"""`init` on exports shaped like other CRMs': the starter mapping passes `check`, and its
dry run agrees with a hand-written mapping's on at least 9 rows in 10 of each file.

The exports and their hand-written mappings are in tests/exports/ (rebuilt by its
make_exports.py; the mappings are written by hand). Rows are compared on their status and
every payload field. The hand-written mappings use the timezone the starter would guess
(UTC for English exports, whose dates here are UTC or days only; the country's zone for a
German or French one): a file does not say where its times were written, and the starter
marks that line CHANGE ME.
"""

import pytest

from importer.cli import main
from tests.conftest import ROOT, rows_of

EXPORTS = ROOT / "tests" / "exports"
FILES = sorted(p for p in EXPORTS.iterdir() if p.suffix in {".csv", ".xlsx"})
COMPARED = ("status", "type", "subject", "note", "occurred_at", "timezone")


def dry_run(tmp_path, input_path, mapping_path, name):
    results = tmp_path / f"{name}.csv"
    args = ["run", str(input_path), "-m", str(mapping_path), "--dry-run", "-q"]
    main([*args, "--results", str(results)])
    return rows_of(results)


def starter_for(tmp_path, input_path, capsys):
    assert main(["init", str(input_path)]) == 0
    mapping = tmp_path / "starter.yaml"
    mapping.write_text(capsys.readouterr().out, encoding="utf-8")
    return mapping


def test_there_are_enough_exports_of_each_kind():
    assert len(FILES) >= 6
    assert sum(p.suffix == ".xlsx" for p in FILES) >= 2
    for path in FILES:
        assert path.with_suffix(".yaml").is_file(), f"{path.name} has no hand-written mapping"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_starter_mapping_passes_check_and_agrees_with_the_hand_written_one(
    tmp_path, capsys, path
):
    starter = starter_for(tmp_path, path, capsys)
    assert main(["check", "--mapping", str(starter), str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    by_hand = dry_run(tmp_path, path, path.with_suffix(".yaml"), "by-hand")
    guessed = dry_run(tmp_path, path, starter, "starter")
    assert [r["row"] for r in guessed] == [r["row"] for r in by_hand]
    # The hand-written mapping makes most rows valid: agreeing is not agreeing on failure.
    assert sum(r["status"] == "valid" for r in by_hand) >= 0.85 * len(by_hand)
    agree = [
        all(mine[key] == theirs[key] for key in COMPARED)
        for mine, theirs in zip(guessed, by_hand, strict=True)
    ]
    differing = [r["row"] for r, same in zip(by_hand, agree, strict=True) if not same]
    assert sum(agree) >= 0.9 * len(agree), f"{len(differing)} rows differ: {differing[:20]}"


def test_init_reads_the_data_sheet_below_its_title_rows_and_says_what_else_there_was(capsys):
    assert main(["init", str(EXPORTS / "hubspot-aktivitaeten.xlsx")]) == 0
    captured = capsys.readouterr()
    assert "  sheet: Aktivitäten\n  header_row: 3\n" in captured.out
    assert "sheet 'Aktivitäten' (header on row 3, 150 rows below it)" in captured.err
    assert "also in the workbook: 'Hinweise' (3 rows, no header row found)" in captured.err


def test_a_blank_row_between_the_titles_and_the_header_is_passed_over(capsys):
    assert main(["init", str(EXPORTS / "donorperfect-contacts.xlsx")]) == 0
    assert "  sheet: Contacts\n  header_row: 4\n" in capsys.readouterr().out


def test_sheet_and_header_row_can_be_named(capsys):
    path = EXPORTS / "hubspot-aktivitaeten.xlsx"
    assert main(["init", str(path), "--sheet", "1", "--header-row", "3"]) == 0
    captured = capsys.readouterr()
    assert "  sheet: Aktivitäten\n  header_row: 3\n" in captured.out and "as asked" in captured.err
    assert main(["init", str(path), "--sheet", "Nope"]) == 2
    assert "no sheet 'Nope'; the sheets are 0: 'Hinweise', 1: 'Aktivitäten'" in (
        capsys.readouterr().err
    )


def test_german_names_and_values_are_recognised_with_their_confidence(capsys):
    assert main(["init", str(EXPORTS / "hubspot-aktivitaeten.xlsx")]) == 0
    out = capsys.readouterr().out
    assert "  email: Kontakt   # medium: its cells are email addresses" in out
    assert "    column: Typ   # high: 'Typ' is German for the kind of activity" in out
    assert "      Anruf: phone_call   # high" in out and "      E-Mail: email   # high" in out
    assert "      Brieftaube: note   # CHANGE ME: no guess" in out
    assert "formats: ['%d.%m.%Y %H:%M']" in out and "timezone: Europe/Berlin" in out
    assert "# Columns not used: Aktivitäts-ID, Vorname, Nachname, Zuständig" in out


def test_a_date_that_falls_back_to_another_column_is_guessed(capsys):
    assert main(["init", str(EXPORTS / "salesforce-tasks.csv")]) == 0
    out = capsys.readouterr().out
    assert "    column: [ActivityDate, CreatedDate]" in out
    assert "  external_id: WhoId" in out  # Salesforce ids are not Givebutter ids


def test_a_cancelled_status_is_suggested_as_a_skip_rule_not_applied(capsys):
    assert main(["init", str(EXPORTS / "neon-activites-fr.csv")]) == 0
    out = capsys.readouterr().out
    assert "#   - {column: Statut, in: [Annulé]}" in out

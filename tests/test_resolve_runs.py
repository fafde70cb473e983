"""Importing files that know people only by email or by their old CRM's id (issue 5)."""

import csv
from pathlib import Path

from importer.cli import main
from importer.sandbox import seeded_contact
from tests.conftest import QUICK_RATE, rows_of, run_cli


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_a_file_of_emails_is_imported_with_one_lookup_per_distinct_email(sandbox, tmp_path):
    emails = [seeded_contact(n).emails[0].value for n in (5, 6, 7)]
    rows = [[f"  {emails[i % 3].upper()} ", "note", f"n{i}"] for i in range(12)]
    rows.append(["nobody@example.org", "note", "x"])
    data = write_csv(tmp_path / "by-email.csv", ["Email", "Type", "Note"], rows)
    code = run_cli(
        sandbox, tmp_path, data, "contact: {email: Email}\nactivity: {type: Type, note: Note}\n"
    )
    results = rows_of(tmp_path / "r.csv")
    assert code == 1
    assert [r["contact_id"] for r in results[:3]] == ["10005", "10006", "10007"]
    assert {r["found_by"] for r in results[:12]} == {"email"}
    assert results[12]["status"] == "invalid"
    assert results[12]["error"] == "no contact with email nobody@example.org"
    assert sandbox.stats.count(method="GET", route="/v1/contacts") == 4 + 1  # + the key check
    assert sandbox.store.count_activities() == 12


def test_a_file_of_old_crm_ids_uses_an_index_built_once(sandbox, tmp_path):
    rows = [[f"CRM-{n:06d}", "email", f"s{n}"] for n in (3, 4, 5)] + [["CRM-999999", "note", ""]]
    data = write_csv(tmp_path / "by-crm-id.csv", ["Legacy ID", "Kind", "Subject"], rows)
    mapping = "contact: {external_id: Legacy ID}\nactivity: {type: Kind, subject: Subject}\n"
    run_cli(sandbox, tmp_path, data, mapping)
    results = rows_of(tmp_path / "r.csv")
    assert [r["contact_id"] for r in results[:3]] == ["10003", "10004", "10005"]
    assert results[3]["status"] == "invalid" and "CRM-999999" in results[3]["error"]
    listed_once = sandbox.stats.count(method="GET", route="/v1/contacts")
    run_cli(sandbox, tmp_path, data, mapping)  # the index is young: reused, not rebuilt
    assert sandbox.stats.count(method="GET", route="/v1/contacts") == listed_once + 1


def test_ambiguous_and_mixed_keys_are_reported_row_by_row(sandbox, tmp_path):
    from importer.sandbox import SHARED_EMAIL

    data = write_csv(
        tmp_path / "mixed.csv",
        ["GB", "Email", "Type"],
        [
            ["10009", "", "note"],
            ["", SHARED_EMAIL, "note"],
            ["", seeded_contact(8).emails[0].value, "sms"],
        ],
    )
    run_cli(sandbox, tmp_path, data, "contact: {id: GB, email: Email}\nactivity: {type: Type}\n")
    results = rows_of(tmp_path / "r.csv")
    assert (results[0]["contact_id"], results[0]["found_by"]) == ("10009", "id")
    assert results[1]["status"] == "invalid" and "share email" in results[1]["error"]
    assert (results[2]["contact_id"], results[2]["found_by"]) == ("10008", "email")


def test_a_plain_dry_run_does_not_look_contacts_up(tmp_path):
    data = write_csv(tmp_path / "e.csv", ["Email", "Type"], [["a@b.org", "note"]])
    mapping = tmp_path / "m.yaml"
    mapping.write_text("contact: {email: Email}\nactivity: {type: Type}\n")
    code = main(
        [
            "run",
            str(data),
            "-m",
            str(mapping),
            "--dry-run",
            "--results",
            str(tmp_path / "r.csv"),
            "-q",
        ]
    )
    row = rows_of(tmp_path / "r.csv")[0]
    assert code == 0 and row["status"] == "valid" and "add --resolve" in row["warning"]


def test_a_dry_run_with_resolve_looks_them_up_and_sends_nothing(sandbox, tmp_path):
    email = seeded_contact(12).emails[0].value
    data = write_csv(tmp_path / "e.csv", ["Email", "Type"], [[email, "note"], ["x@y.org", "note"]])
    code = run_cli(
        sandbox,
        tmp_path,
        data,
        "contact: {email: Email}\nactivity: {type: Type}\n",
        "--dry-run",
        "--resolve",
    )
    results = rows_of(tmp_path / "r.csv")
    assert code == 1 and results[0]["contact_id"] == "10012" and results[1]["status"] == "invalid"
    assert sandbox.stats.count(method="POST") == 0


def test_contacts_refresh_rebuilds_the_index_beside_the_ledger(sandbox, tmp_path, capsys):
    ledger = tmp_path / "ledger.sqlite"
    code = main(
        [
            "contacts",
            "refresh",
            "--base-url",
            sandbox.base_url,
            "--rate",
            QUICK_RATE,
            "--ledger",
            str(ledger),
        ]
    )
    assert code == 0 and "1,000 contacts" in capsys.readouterr().out
    assert (tmp_path / "contacts.sqlite").exists()
    pages = sandbox.stats.count(method="GET", route="/v1/contacts")
    data = write_csv(tmp_path / "x.csv", ["Legacy ID", "Type"], [["CRM-000003", "note"]])
    run_cli(sandbox, tmp_path, data, "contact: {external_id: Legacy ID}\nactivity: {type: Type}\n")
    assert sandbox.stats.count(method="GET", route="/v1/contacts") == pages + 1  # key check only
    assert rows_of(tmp_path / "r.csv")[0]["contact_id"] == "10003"

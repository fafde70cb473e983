"""The ledger's file: one lock per real file, no silent new ledger, one-line errors, the mark
instant, claimed ids, and settling a row by hand."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from importer.errors import ConfigError, LedgerError
from importer.ledger import EntryState, Ledger, LedgerBusy, NewEntry
from importer.ledger_file import MIGRATIONS
from tests.test_ledger import entry, run_in_another_process


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


# -- the lock follows the real file --------------------------------------------------------


def test_a_symlink_to_a_ledger_in_use_is_busy_too(ledger_path: Path, tmp_path: Path) -> None:
    link = tmp_path / "elsewhere" / "link.sqlite"
    link.parent.mkdir()
    with run_in_another_process(ledger_path) as holder:
        link.symlink_to(ledger_path)
        with pytest.raises(LedgerBusy) as busy:
            Ledger.open(link)
        message = one_line(busy.value)
        assert f"pid {holder.pid}" in message and f"(that is, {ledger_path})" in message


def test_a_symlinked_folder_shares_the_lock_too(ledger_path: Path, tmp_path: Path) -> None:
    with Ledger.open(ledger_path):
        alias = tmp_path / "alias"
        alias.symlink_to(ledger_path.parent, target_is_directory=True)
        with pytest.raises(LedgerBusy):
            Ledger.open(alias / ".." / "alias" / ledger_path.name)


# -- a file that is not a ledger -------------------------------------------------------------


def test_an_empty_file_is_refused_with_one_line(ledger_path: Path) -> None:
    with Ledger.open(ledger_path) as ledger:
        ledger.mark_sending([entry(1)])
    ledger_path.write_bytes(b"")  # truncated to 0 bytes
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (ledger_path.parent / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError) as refused:
        Ledger.open(ledger_path)
    message = one_line(refused.value)
    assert "is empty (0 bytes): every row would be sent again" in message
    assert refused.value.setting == "new_ledger"  # the CLI names its option for it
    assert ledger_path.read_bytes() == b""  # left as it was


def test_new_ledger_takes_an_empty_file_as_a_new_ledger(ledger_path: Path) -> None:
    ledger_path.parent.mkdir()
    ledger_path.write_bytes(b"")
    with Ledger.open(ledger_path, new_ledger=True) as ledger:
        assert ledger.is_empty()
    with Ledger.open(ledger_path) as ledger:  # a ledger now: no flag needed
        assert ledger.is_empty()


def test_an_sqlite_database_of_something_else_is_refused_even_with_new_ledger(
    ledger_path: Path,
) -> None:
    ledger_path.parent.mkdir()
    with closing(sqlite3.connect(ledger_path)) as db:
        db.execute("CREATE TABLE contacts (id INTEGER)")
        db.commit()
    for new_ledger in (False, True):
        with pytest.raises(ConfigError, match="an SQLite database of something else"):
            Ledger.open(ledger_path, new_ledger=new_ledger)
    with closing(sqlite3.connect(ledger_path)) as db:  # untouched
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("contacts",)]


def test_a_new_ledger_is_never_seen_half_made(ledger_path: Path) -> None:
    with Ledger.open(ledger_path):
        pass
    leftovers = [p.name for p in ledger_path.parent.iterdir() if p.name.endswith(".new")]
    assert leftovers == []


def test_a_ledger_path_that_is_a_folder_is_one_line(ledger_path: Path) -> None:
    ledger_path.mkdir(parents=True)
    with pytest.raises(ConfigError) as refused:
        Ledger.open(ledger_path)
    assert one_line(refused.value) == f"the ledger path {ledger_path} is a folder; give a file"


# -- a damaged ledger, a full disk ---------------------------------------------------------


def damage(ledger_path: Path) -> None:
    """Overwrite the second page (the entries table's first page) with noise."""
    with closing(sqlite3.connect(ledger_path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    with open(ledger_path, "r+b") as f:
        f.seek(page_size)
        f.write(b"\xa5" * page_size)


def test_a_damaged_page_is_one_line_naming_the_file(ledger_path: Path) -> None:
    with Ledger.open(ledger_path) as ledger:
        ledger.mark_sending([entry(n) for n in range(200)])
    damage(ledger_path)
    with pytest.raises(LedgerError) as damaged, Ledger.open(ledger_path) as ledger:
        ledger.lookup([entry(1).key])
        ledger.stats()
    message = one_line(damaged.value)
    assert message.startswith(f"the ledger {ledger_path} is damaged (")
    assert "restore it from a backup" in message


def test_a_full_disk_is_one_line_naming_the_file(ledger: Ledger, ledger_path: Path) -> None:
    # SQLite's own limit on the file's pages answers exactly as a full disk does (SQLITE_FULL).
    (pages,) = ledger._db.execute("PRAGMA page_count").fetchone()
    ledger._db.execute(f"PRAGMA max_page_count = {pages + 1}")
    with pytest.raises(LedgerError) as full:
        ledger.mark_sending([entry(n) for n in range(2000)])
    expected = f"the disk holding the ledger {ledger_path} is full; free some space and run again"
    assert one_line(full.value) == expected
    assert ledger.stats()[EntryState.SENDING] == 0  # the batch was rolled back whole


# -- the mark, claimed ids ---------------------------------------------------------------


def test_the_mark_instant_is_kept_and_a_second_mark_keeps_the_first(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    ledger.mark_sending([entry(1)])
    first = ledger.lookup([entry(1).key])[entry(1).key].marked_instant
    assert first is not None and before - timedelta(seconds=1) <= first <= datetime.now(UTC)
    ledger.mark_sending([entry(1)])  # still in doubt: the search must look from the first mark
    assert ledger.lookup([entry(1).key])[entry(1).key].marked_instant == first


def test_a_failed_entry_marked_again_gets_a_new_mark(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1)])
    ledger._db.execute("UPDATE entries SET marked_at = '2020-01-01T00:00:00.000+00:00'")
    ledger.record_failed(entry(1).key, "422", 1, 422)
    ledger.commit()
    ledger.mark_sending([entry(1)])
    marked = ledger.lookup([entry(1).key])[entry(1).key].marked_instant
    assert marked is not None and marked.year > 2020


def test_a_version_1_ledger_gets_the_mark_from_updated_at(ledger_path: Path) -> None:
    ledger_path.parent.mkdir()
    with closing(sqlite3.connect(ledger_path)) as db:
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO entries (key, state, contact_id, row, input_name, payload_json, "
            "updated_at) VALUES ('k', 'sending', 42, 2, 'a.csv', '{}', "
            "'2026-01-02T03:04:05.000+00:00')"
        )
        db.execute("PRAGMA user_version = 1")
        db.commit()
    with Ledger.open(ledger_path) as ledger:
        [left] = ledger.ambiguous()
        assert left.marked_instant == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_claimed_ids_are_the_contacts_created_activity_ids(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1), entry(2), entry(3), entry(4, contact_id=7)])
    ledger.record_created(entry(1).key, "a1", 1)
    ledger.record_failed(entry(2).key, "no", 1, 422)
    ledger.record_created(entry(4).key, "a4", 1)
    ledger.commit()
    assert ledger.claimed_ids(42) == frozenset({"a1"})
    assert ledger.claimed_ids(7) == frozenset({"a4"})
    assert [e.key for e in ledger.in_doubt(42)] == [entry(3).key]


# -- settling a row by hand ----------------------------------------------------------------


def test_settle_created_records_the_id_found_by_a_person(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1)])
    settled = ledger.settle_created(entry(1).row, "act-9")
    assert (settled.state, settled.activity_id) == (EntryState.CREATED, "act-9")
    assert ledger.ambiguous() == []
    assert ledger.claimed_ids(42) == frozenset({"act-9"})


def test_settle_created_refuses_an_id_another_row_holds(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1), entry(2)])
    ledger.record_created(entry(1).key, "act-1", 1)
    ledger.commit()
    with pytest.raises(ConfigError, match="activity act-1 is already another row's"):
        ledger.settle_created(entry(2).row, "act-1")


def test_settle_absent_makes_the_next_run_send_it(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1)])
    settled = ledger.settle_absent(entry(1).row)
    assert settled.state is EntryState.FAILED
    ledger.mark_sending([entry(1)])  # a failed entry may be sent again


def test_settling_a_row_not_in_doubt_says_so(ledger: Ledger) -> None:
    with pytest.raises(ConfigError, match="no entry of row 5 is sending"):
        ledger.settle_absent(5)


def test_settling_a_row_in_two_files_asks_which(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1), NewEntry("b" * 64, 42, entry(1).row, "other.csv", "{}")])
    with pytest.raises(ConfigError, match="name the input file"):
        ledger.settle_absent(entry(1).row)
    assert ledger.settle_absent(entry(1).row, input_name="other.csv").key == "b" * 64

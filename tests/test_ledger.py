"""The ledger: keys, durability, the one-run-at-a-time lock, and what a crash leaves behind."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from importer.errors import ConfigError
from importer.ledger import (
    SCHEMA_VERSION,
    EntryState,
    Ledger,
    LedgerBusy,
    NewEntry,
    activity_key,
    canonical_json,
    lock_path,
)
from importer.payload import ActivityPayload
from tests.conftest import ROOT

BASE = "https://api.givebutter.com/v1"
FIELDS: dict[str, Any] = {
    "type": "phone_call",
    "note": "Called about the gala — left a message",
    "subject": "Gala follow-up",
    "occurred_at": "2024-03-01T10:00:00Z",
    "timezone": "America/New_York",
}

# A run in another process: open the ledger, maybe mark one key sending and buffer its
# result without committing, say "ready", then wait to be killed.
CHILD = """
import sys, time
from importer.ledger import Ledger, NewEntry
ledger = Ledger.open(sys.argv[1])
for key in sys.argv[2:]:
    ledger.mark_sending([NewEntry(key, 42, 7, "calls.csv", "{}")])
    ledger.record_created(key, "act-1", 1)
print("ready", flush=True)
time.sleep(120)
"""


def payload(**changes: Any) -> ActivityPayload:
    return ActivityPayload.model_validate({**FIELDS, **changes})


def entry(n: int, *, contact_id: int = 42) -> NewEntry:
    return NewEntry(f"{n:064x}", contact_id, n + 2, "calls.csv", '{"type":"note"}')


def other_connection(ledger_path: Path) -> closing[sqlite3.Connection]:
    """A reader that is not the ledger: it sees only what is committed."""
    return closing(sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True))


def states_seen_by_another_connection(ledger_path: Path) -> dict[str, str]:
    with other_connection(ledger_path) as db:
        return dict(db.execute("SELECT key, state FROM entries"))


@contextmanager
def run_in_another_process(ledger_path: Path, *keys: str) -> Iterator[subprocess.Popen[str]]:
    """A process holding the ledger at `ledger_path`; killed with SIGKILL when the block ends."""
    args = [sys.executable, "-c", CHILD, str(ledger_path), *keys]
    with subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            yield process
        finally:
            process.kill()  # SIGKILL: no cleanup runs in the child


# -- the key ------------------------------------------------------------------------------


def test_key_is_a_sha256_hex_digest_stable_for_the_same_payload_built_twice() -> None:
    built_from_dict = payload()
    built_by_keywords = ActivityPayload(
        timezone="America/New_York",
        occurred_at="2024-03-01T10:00:00Z",  # type: ignore[arg-type]
        subject="Gala follow-up",
        note="Called about the gala — left a message",
        type="phone_call",  # type: ignore[arg-type]
    )
    key = activity_key(BASE, 42, built_from_dict)
    assert key == activity_key(BASE, 42, built_by_keywords)
    assert len(key) == 64 and int(key, 16) >= 0


def test_key_changes_with_the_base_url_the_contact_and_every_payload_field() -> None:
    keys = [
        activity_key(BASE, 42, payload()),
        activity_key("https://api.example.test/v1", 42, payload()),
        activity_key(BASE, 43, payload()),
        activity_key(BASE, 42, payload(type="note")),
        activity_key(BASE, 42, payload(note="Called about the gala")),
        activity_key(BASE, 42, payload(subject="Gala")),
        activity_key(BASE, 42, payload(occurred_at="2024-03-01T10:00:01Z")),
        activity_key(BASE, 42, payload(timezone="Europe/Paris")),
        activity_key(BASE, 42, ActivityPayload.model_validate({"type": "phone_call"})),
    ]
    assert len(set(keys)) == len(keys)


def test_key_ignores_the_case_of_scheme_and_host_and_a_trailing_slash() -> None:
    same = [BASE, "HTTPS://API.Givebutter.com/v1/", "https://api.givebutter.com:443/v1"]
    assert len({activity_key(url, 42, payload()) for url in same}) == 1


def test_canonical_json_is_the_sorted_compact_body() -> None:
    text = canonical_json(ActivityPayload.model_validate({"type": "note", "note": "café"}))
    assert text == '{"note":"café","type":"note"}'


# -- the file -----------------------------------------------------------------------------


def test_ledger_its_wal_and_its_lock_are_owner_only(ledger: Ledger, ledger_path: Path) -> None:
    ledger.mark_sending([entry(1)])
    for file in (
        ledger_path,
        ledger_path.with_name(ledger_path.name + "-wal"),
        lock_path(ledger_path),
    ):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_missing_parent_directory_is_created_owner_only(ledger: Ledger, ledger_path: Path) -> None:
    assert stat.S_IMODE(ledger_path.parent.stat().st_mode) == 0o700


def test_ledger_is_in_wal_mode_with_a_schema_version(ledger: Ledger, ledger_path: Path) -> None:
    with other_connection(ledger_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_ledger_from_a_newer_version_is_refused(ledger_path: Path) -> None:
    Ledger.open(ledger_path).close()
    with closing(sqlite3.connect(ledger_path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for _ in range(2):  # the second time shows the lock was released, not left busy
        with pytest.raises(ConfigError, match="newer givebutter-import"):
            Ledger.open(ledger_path)


def test_a_file_that_is_not_a_ledger_is_refused_and_the_lock_released(ledger_path: Path) -> None:
    ledger_path.parent.mkdir()
    ledger_path.write_text("row,contact\n" * 200)
    with pytest.raises(ConfigError, match="not a usable givebutter-import ledger"):
        Ledger.open(ledger_path)
    ledger_path.unlink()
    Ledger.open(ledger_path).close()


# -- entries ------------------------------------------------------------------------------


def test_mark_sending_is_committed_before_it_returns(ledger: Ledger, ledger_path: Path) -> None:
    ledger.mark_sending([entry(1), entry(2)])
    assert states_seen_by_another_connection(ledger_path) == {
        entry(1).key: "sending",
        entry(2).key: "sending",
    }


def test_created_entry_is_found_by_lookup(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1)])
    ledger.record_created(entry(1).key, "act-9", attempts=2)
    ledger.commit()
    found = ledger.lookup([entry(1).key, entry(2).key])
    assert list(found) == [entry(1).key]
    created = found[entry(1).key]
    assert (created.state, created.activity_id, created.attempts) == (
        EntryState.CREATED,
        "act-9",
        2,
    )
    assert (created.contact_id, created.row, created.input_name) == (42, 3, "calls.csv")
    assert created.payload_json == '{"type":"note"}'


def test_results_are_invisible_to_another_connection_until_commit(
    ledger: Ledger, ledger_path: Path
) -> None:
    ledger.mark_sending([entry(1), entry(2)])
    ledger.record_created(entry(1).key, "act-1", attempts=1)
    ledger.record_failed(entry(2).key, "422: subject is too long", attempts=1, http_status=422)
    assert ledger.pending_results == 2
    assert set(states_seen_by_another_connection(ledger_path).values()) == {"sending"}
    ledger.commit()
    assert states_seen_by_another_connection(ledger_path) == {
        entry(1).key: "created",
        entry(2).key: "failed",
    }


def test_commit_returns_the_keys_it_made_durable_and_empties_the_buffer(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1), entry(2), entry(3)])
    ledger.record_created(entry(1).key, "act-1", attempts=1)
    ledger.record_failed(entry(3).key, "404: no such contact", attempts=1, http_status=404)
    assert sorted(ledger.commit()) == sorted([entry(1).key, entry(3).key])
    assert ledger.pending_results == 0
    assert ledger.commit() == []


def test_failed_entry_keeps_its_reason_and_may_be_sent_again(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1)])
    ledger.record_failed(entry(1).key, "503: unavailable", attempts=5, http_status=503)
    ledger.commit()
    failed = ledger.lookup([entry(1).key])[entry(1).key]
    assert (failed.state, failed.error, failed.http_status) == ("failed", "503: unavailable", 503)
    ledger.mark_sending([entry(1)])
    again = ledger.lookup([entry(1).key])[entry(1).key]
    assert (again.state, again.error, again.http_status) == ("sending", "", None)


def test_created_entry_cannot_be_marked_sending_again(ledger: Ledger, ledger_path: Path) -> None:
    ledger.mark_sending([entry(1)])
    ledger.record_created(entry(1).key, "act-1", attempts=1)
    ledger.commit()
    with pytest.raises(ValueError, match="already created"):
        ledger.mark_sending([entry(2), entry(1)])
    assert states_seen_by_another_connection(ledger_path) == {entry(1).key: "created"}


def test_commit_refuses_results_for_keys_never_marked_sending(ledger: Ledger) -> None:
    ledger.mark_sending([entry(1)])
    ledger.record_created(entry(1).key, "act-1", attempts=1)
    ledger.record_created(entry(2).key, "act-2", attempts=1)
    with pytest.raises(ValueError, match=entry(2).key):
        ledger.commit()
    assert ledger.lookup([entry(1).key])[entry(1).key].state == "sending"
    assert ledger.pending_results == 2
    ledger.mark_sending([entry(2)])  # the buffer was kept: now both can be written
    assert len(ledger.commit()) == 2


def test_lookup_takes_more_keys_than_one_query_can(ledger: Ledger) -> None:
    ledger.mark_sending(entry(n) for n in range(1200))
    asked = [entry(n).key for n in range(1300)]
    assert len(ledger.lookup(asked)) == 1200


def test_close_commits_buffered_results(ledger_path: Path) -> None:
    with Ledger.open(ledger_path) as ledger:
        ledger.mark_sending([entry(1)])
        ledger.record_created(entry(1).key, "act-1", attempts=1)
    assert states_seen_by_another_connection(ledger_path) == {entry(1).key: "created"}


def test_created_entries_lists_every_page_even_while_forgetting(ledger: Ledger) -> None:
    ledger.mark_sending(entry(n) for n in range(2500))
    for n in range(2500):
        if n % 5:
            ledger.record_created(entry(n).key, f"act-{n}", attempts=1)
    ledger.commit()
    undone = []
    for created in ledger.created_entries():
        ledger.forget(created.key)
        undone.append(created.activity_id)
    assert len(undone) == len(set(undone)) == 2000
    assert list(ledger.created_entries()) == []
    assert ledger.stats() == {"sending": 500, "created": 0, "failed": 0}


def test_stats_count_each_state(ledger: Ledger) -> None:
    assert ledger.stats() == {"sending": 0, "created": 0, "failed": 0}
    ledger.mark_sending([entry(1), entry(2), entry(3)])
    ledger.record_created(entry(1).key, "act-1", attempts=1)
    ledger.record_failed(entry(2).key, "422", attempts=1, http_status=422)
    ledger.commit()
    assert ledger.stats() == {"sending": 1, "created": 1, "failed": 1}


def test_ten_thousand_results_are_written_in_one_commit(ledger: Ledger, ledger_path: Path) -> None:
    entries = [entry(n) for n in range(10_000)]
    ledger.mark_sending(entries)
    for new in entries:
        ledger.record_created(new.key, f"act-{new.row}", attempts=1)
    assert len(ledger.commit()) == 10_000
    assert ledger.stats()[EntryState.CREATED] == 10_000


# -- one run at a time --------------------------------------------------------------------


def test_second_open_raises_ledger_busy_naming_the_pid(ledger: Ledger, ledger_path: Path) -> None:
    with pytest.raises(LedgerBusy) as busy:
        Ledger.open(ledger_path)
    message = str(busy.value)
    assert f"ledger {ledger_path} (pid {os.getpid()}, started at " in message
    assert message.endswith("wait for it or use another ledger")
    assert busy.value.setting == "ledger_path"  # the CLI names its option for it
    assert isinstance(busy.value, ConfigError)


def test_lock_is_released_on_close(ledger_path: Path) -> None:
    Ledger.open(ledger_path).close()
    Ledger.open(ledger_path).close()


def test_lock_of_a_process_killed_with_sigkill_is_released(ledger_path: Path) -> None:
    with run_in_another_process(ledger_path) as holder:
        with pytest.raises(LedgerBusy, match=f"pid {holder.pid}, started at"):
            Ledger.open(ledger_path)
        holder.kill()
        holder.wait()
    Ledger.open(ledger_path).close()


def test_wait_blocks_until_the_holder_is_gone(ledger_path: Path) -> None:
    with run_in_another_process(ledger_path) as holder:
        killer = threading.Timer(0.2, holder.kill)
        killer.start()
        Ledger.open(ledger_path, wait=True).close()
        killer.join()
        assert holder.wait() == -9


def test_crash_between_mark_sending_and_commit_leaves_the_entry_ambiguous(
    ledger_path: Path,
) -> None:
    key = entry(1).key
    with run_in_another_process(ledger_path, key) as holder:
        holder.kill()
        holder.wait()
    with Ledger.open(ledger_path) as ledger:
        [left] = ledger.ambiguous()
        assert (left.key, left.state, left.activity_id) == (key, "sending", None)
        assert (left.contact_id, left.row, left.input_name) == (42, 7, "calls.csv")


def test_a_ledger_of_the_first_schema_is_migrated_in_place_keeping_its_entries(
    ledger_path: Path,
) -> None:
    """Yesterday's ledger (schema 1: content entries only) gains the source-key records
    table when opened, and what it knew is still known."""
    from importer.ledger import _MIGRATIONS

    ledger_path.parent.mkdir(mode=0o700)
    with closing(sqlite3.connect(ledger_path)) as db:
        for statement in _MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO entries (key, state, contact_id, activity_id, row, input_name, "
            "payload_json, updated_at) "
            "VALUES ('k1', 'created', 10001, '77', 2, 'old.csv', '{}', 'x')"
        )
        db.execute("PRAGMA user_version = 1")
        db.commit()
    with Ledger.open(ledger_path) as ledger:
        assert ledger.lookup(["k1"])["k1"].activity_id == "77"
        tables = {row[0] for row in ledger.connection.execute("SELECT name FROM sqlite_master")}
        assert "records" in tables
    with other_connection(ledger_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_batches_of_every_size_are_written_with_a_few_statements(ledger):
    """sqlite3 keeps the last 128 statements it compiled; one per batch length filled it
    with large statements (9 MB over a long run). Marks, results and lookups of every
    length from 1 to 160 use a handful of statement texts each."""
    texts: set[str] = set()
    ledger.connection.set_trace_callback(texts.add)
    first = 0
    for size in range(1, 161):  # every remainder of a 140-row part, and past it
        batch = [entry(n) for n in range(first, first + size)]
        ledger.mark_sending(batch)
        for e in batch[::2]:
            ledger.record_created(e.key, f"a{e.row}", 1)
        if size % 4 == 0:  # results of several lengths too, with fewer fsyncs
            ledger.commit()
        assert len(ledger.lookup(e.key for e in batch)) == size
        first += size
    ledger.commit()
    ledger.connection.set_trace_callback(None)
    # The trace shows each statement with its values: tell them apart by their length.
    marks = {t.count("'sending'") for t in texts if "INSERT INTO entries" in t}
    lookups = {t.count(",") for t in texts if t.lstrip().startswith("SELECT") and "key IN" in t}
    assert 1 < len(marks) <= 10 and 1 < len(lookups) <= 12, (marks, lookups)
    assert ledger.stats()[EntryState.CREATED] == sum((size + 1) // 2 for size in range(1, 161))

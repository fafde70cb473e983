"""The ledger: what was sent to Givebutter, so that a re-run never posts an activity twice.

The API has no idempotency key, so the importer keeps its own record, a SQLite file with one
entry per activity, keyed by `activity_key()`: a hash of the target (base URL), the contact id
and the exact JSON body. The same row in a re-run, or in a file that has grown since, gets the
same key wherever it sits in the file.

An entry's `state` is `sending` (about to be posted, or posted with no answer recorded),
`created` (the API answered with an activity id) or `failed` (the API refused it).

What is promised
- `mark_sending()` returns only once its entries are committed and fsynced: a caller that
  posts after it returns can never have posted something the ledger does not know about.
- `record_created()` / `record_failed()` only buffer, in memory. `commit()` writes every
  buffered result in one transaction, fsyncs it, and returns the keys it wrote. A result is
  durable once `commit()` has returned it, and not before: report a row as created only then.
- A process killed at any point (kill -9 included) leaves every committed transaction intact
  and loses only what was buffered. Entries it had marked but not yet committed results for
  stay in `sending` and are listed by `ambiguous()`: their POST may or may not have landed,
  so look for them on the server before sending them again.
- One run at a time: `Ledger.open()` takes an exclusive `flock` on `PATH.lock` for the
  ledger's lifetime, PATH resolved first, so a symlink to the ledger shares its lock. The
  kernel releases it when the process ends, however it ends. A second open raises
  `LedgerBusy` (or waits, with `wait=True`).
- Each entry keeps `marked_at`, when it was marked `sending`; marking again an entry still
  `sending` keeps the first mark, so a search for it on the server never looks too late.
- A file that is not a ledger (empty, foreign), a damaged one, a full disk: one line,
  never a traceback (see `importer.ledger_file`).
- The ledger file, its WAL and its lock file are created readable by their owner only
  (0600), in a directory created 0700 if missing: they hold activity bodies, which can carry
  personal data.

What is not promised
- Durability across power loss holds only if the disk honours fsync (`synchronous=FULL`).
- `lookup()` reads the file, not the buffer: results not yet committed are not in it.
- The key knows the base URL, not the account behind an API key: use one ledger per account.
- The ledger knows only what went through it: activities created some other way, or deleted
  on the server since, are not its concern.
- The lock is advisory and local: it does not protect a ledger on a network filesystem
  shared by two machines, nor against programs that do not take it.

Why `synchronous=FULL` rather than NORMAL: in WAL mode both survive a killed process (the
commit is in the WAL file, handed to the OS). NORMAL skips the fsync at each commit, so after
a power loss or an OS crash the last commits can roll back. SQLite's docs warn about exactly
our case: data that depends on something outside the database. Here, activities already on
the server; a rolled-back entry would be posted again. FULL costs one fsync per transaction,
and transactions are per batch (`mark_sending`, `commit`), never per row.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from importer.errors import ConfigError
from importer.ledger_file import (
    MIGRATIONS,
    SCHEMA_VERSION,
    LedgerBusy,
    acquire_lock,
    connect,
    lock_path,
    real_path,
    shown,
    transaction,
    translate_errors,
)
from importer.ledger_file import now as _now
from importer.payload import ActivityPayload
from importer.private_files import make_private_folders

__all__ = ["SCHEMA_VERSION", "LedgerBusy", "lock_path"]  # re-exported: part of this API
_transaction = transaction  # the name the ledger's companion modules (key_records) use
_MIGRATIONS = MIGRATIONS  # the name the migration tests read

_T = TypeVar("_T")
_LOOKUP_CHUNK = 500  # well under SQLite's limit on parameters per statement
_PAGE = 1000  # rows fetched per query when iterating
_DEFAULT_PORTS = {"https": 443, "http": 80}

# Writes go a few hundred rows to a statement, not one statement a row: the same B-tree work,
# a third of the time spent getting rows from Python to SQLite. 140 rows × 7 parameters stays
# under the 999 parameters the oldest SQLite allows in one statement.
_ROWS_PER_STATEMENT = 140
_MARK_VALUES = "(?, 'sending', ?, ?, ?, ?, ?, ?)"
_MARK_SENDING = """
    INSERT INTO entries
        (key, state, contact_id, row, input_name, payload_json, updated_at, marked_at)
    VALUES {values}
    ON CONFLICT (key) DO UPDATE SET
        state = 'sending', contact_id = excluded.contact_id, row = excluded.row,
        input_name = excluded.input_name, payload_json = excluded.payload_json,
        error = '', http_status = NULL, updated_at = excluded.updated_at,
        marked_at = CASE WHEN entries.state = 'sending'
            THEN coalesce(entries.marked_at, excluded.marked_at) ELSE excluded.marked_at END
    WHERE entries.state != 'created'
"""
_RESULT_VALUES = "(?, ?, ?, ?, ?, ?)"  # key, state, activity_id, error, http_status, attempts
_RECORD_RESULTS = """
    UPDATE entries SET state = v.column2, activity_id = v.column3, error = v.column4,
        http_status = v.column5, attempts = v.column6, updated_at = ?
    FROM (VALUES {values}) AS v
    WHERE entries.key = v.column1
"""
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)  # UPDATE ... FROM is 3.33's

_COLUMNS = (
    "key, state, contact_id, activity_id, row, input_name, payload_json, error, "
    "http_status, attempts, updated_at, marked_at"
)


class EntryState(StrEnum):
    """Where an activity stands in the ledger."""

    SENDING = "sending"  # marked before the POST; no answer recorded (yet)
    CREATED = "created"  # the API answered with an activity id
    FAILED = "failed"  # the API definitely did not create it


@dataclass(slots=True, frozen=True)
class NewEntry:
    """An activity about to be posted: what `mark_sending()` records."""

    key: str
    contact_id: int
    row: int  # the spreadsheet row number, for people reading the ledger
    input_name: str  # the input file's name, informational
    payload_json: str  # `canonical_json(payload)`: the exact body posted


@dataclass(slots=True, frozen=True)
class LedgerEntry:
    """One activity as the ledger knows it."""

    key: str
    state: EntryState
    contact_id: int
    activity_id: str | None
    row: int
    input_name: str
    payload_json: str
    error: str
    http_status: int | None
    attempts: int
    updated_at: str  # ISO 8601, UTC
    marked_at: str | None = None  # ISO 8601, UTC: when it was (first) marked `sending`

    @property
    def marked_instant(self) -> datetime | None:
        """`marked_at` as an aware datetime (None if never marked, or unreadable)."""
        try:
            return datetime.fromisoformat(self.marked_at) if self.marked_at else None
        except ValueError:
            return None


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(payload: ActivityPayload) -> str:
    """The request body as one canonical string: the same payload always gives the same text."""
    return canonical_body_json(payload.to_body())


def canonical_body_json(body: dict[str, Any]) -> str:
    """`canonical_json` of a body already made with `ActivityPayload.to_body()`."""
    return _CANONICAL.encode(body)


def normalise_base_url(base_url: str) -> str:
    """Lowercase scheme and host, no default port, no trailing slash, no query or fragment."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{parts.port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


def activity_key(base_url: str, contact_id: int, payload: ActivityPayload) -> str:
    """The ledger key of one activity: sha256 hex of target, contact id and canonical body.

    The three parts are joined by newlines, which none of them can contain (the JSON escapes
    them), so two different triples never hash the same text.
    """
    return key_of_json(base_url, contact_id, canonical_json(payload))


def key_of_json(base_url: str, contact_id: int, payload_json: str) -> str:
    """`activity_key` of a payload whose `canonical_json` is already made."""
    text = f"{_normalised_base_url(base_url)}\n{int(contact_id)}\n{payload_json}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# A run keys every row with the same base URL: parse it once, not once a row.
_normalised_base_url = functools.lru_cache(maxsize=16)(normalise_base_url)


class Ledger:
    """The record of what was sent. Open with `Ledger.open(path)`; use as a context manager.

    All methods are synchronous: about 10 µs a row plus one fsync per transaction (500 rows:
    ~4 ms to mark, ~5 ms to commit their results, more when the disk is slow to fsync). They
    may be called from any thread, one call at a time: a sending run makes its calls on a
    thread of their own, so that the event loop never waits for an fsync.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int) -> None:
        """Use `Ledger.open()`; this takes ownership of an open connection and a held lock."""
        self.path = path
        self._where = shown(path, real_path(path))  # how messages name it
        self._db = connection
        self._lock_fd: int | None = lock_fd
        self._results: dict[str, tuple[Any, ...]] = {}

    @property
    def connection(self) -> sqlite3.Connection:
        """The open SQLite connection, for the ledger's companion tables (`key_records`)."""
        return self._db

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, wait: bool = False, new_ledger: bool = False) -> Ledger:
        """Lock the ledger at `path` for this run and open it, creating it (0600) if need be.

        Raises `LedgerBusy` if another run holds it (unless `wait`, which blocks until it is
        free), `ConfigError` if the file cannot be created or is not a ledger (an empty file
        is taken as a new ledger only with `new_ledger`), `LedgerError` if it is damaged.
        """
        path = Path(path)
        real = real_path(path)
        try:
            make_private_folders(real.parent)
        except OSError as error:
            raise ConfigError(f"cannot create {real.parent}: {error.strerror or error}") from None
        if real.is_dir():
            raise ConfigError(f"the ledger path {shown(path, real)} is a folder; give a file")
        lock_fd = acquire_lock(path, wait=wait)
        try:
            connection = connect(path, real, new_ledger=new_ledger)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, connection, lock_fd)

    def close(self) -> None:
        """Commit any buffered results, close the file and release the lock. Idempotent.

        Buffered results are facts about the server, so they are kept rather than dropped;
        call `commit()` first if you need their keys.
        """
        if self._lock_fd is None:
            return
        try:
            self.commit()
        finally:
            self._db.close()
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------

    def lookup(self, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """The committed entries for those of `keys` the ledger knows; unknown keys are absent."""
        found: dict[str, LedgerEntry] = {}
        for chunk in _chunks(list(dict.fromkeys(keys)), _LOOKUP_CHUNK):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {_COLUMNS} FROM entries WHERE key IN ({marks})"
            for values in self._rows(query, chunk):
                found[values[0]] = _entry(values)
        return found

    def is_empty(self) -> bool:
        """True if the ledger holds no entry at all (a first run: nothing to look up)."""
        return not self._rows("SELECT 1 FROM entries LIMIT 1")

    def ambiguous(self) -> list[LedgerEntry]:
        """Committed entries still `sending`: marked, with no result committed since.

        At the start of a run these are the rows an earlier run may or may not have posted.
        """
        query = f"SELECT {_COLUMNS} FROM entries WHERE state = 'sending' ORDER BY input_name, row"
        return [_entry(values) for values in self._rows(query)]

    def created_entries(self) -> Iterator[LedgerEntry]:
        """Every `created` entry, in key order, read a page at a time.

        No statement stays open between pages, so the caller may `forget()` as it goes.
        """
        after = ""
        while True:
            page = self._rows(
                f"SELECT {_COLUMNS} FROM entries WHERE state = 'created' AND key > ? "
                "ORDER BY key LIMIT ?",
                (after, _PAGE),
            )
            yield from (_entry(values) for values in page)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def stats(self) -> dict[EntryState, int]:
        """How many committed entries are in each state (every state present, maybe 0)."""
        counts = dict.fromkeys(EntryState, 0)
        for state, count in self._rows("SELECT state, count(*) FROM entries GROUP BY state"):
            counts[EntryState(state)] = count
        return counts

    def claimed_ids(self, contact_id: int) -> frozenset[str]:
        """The activity ids the contact's `created` entries hold: no other row may take them
        (committed ones only: the caller adds the ids it has given out since)."""
        rows = self._rows(
            "SELECT activity_id FROM entries WHERE state = 'created' AND contact_id = ? "
            "UNION SELECT activity_id FROM records WHERE contact_id = ? AND state != 'deleted'",
            (int(contact_id), int(contact_id)),
        )
        return frozenset(activity_id for (activity_id,) in rows if activity_id)

    def in_doubt(self, contact_id: int) -> list[LedgerEntry]:
        """The contact's committed entries still `sending`: rows whose creation is in doubt
        (or that this run has marked and not yet recorded)."""
        query = f"SELECT {_COLUMNS} FROM entries WHERE state = 'sending' AND contact_id = ?"
        return [_entry(values) for values in self._rows(query, (int(contact_id),))]

    # -- settling a row by hand -------------------------------------------------------------

    def settle_created(
        self, row: int, activity_id: str, *, input_name: str | None = None
    ) -> LedgerEntry:
        """A person found the row's activity in Givebutter: record the row `created` as
        `activity_id`, committed at once. The row must be in doubt (`sending`) or `failed`,
        and the id not held by another entry; `ConfigError` otherwise."""
        activity_id = activity_id.strip()
        if not activity_id:
            raise ConfigError("give the activity id, as in --mark-created ROW=ID")
        entry = self._entry_to_settle(row, input_name, ("sending", "failed"))
        if activity_id in self.claimed_ids(entry.contact_id):
            raise ConfigError(
                f"activity {activity_id} is already another row's in the ledger {self._where}"
            )
        self._settle(entry.key, EntryState.CREATED, activity_id, "")
        return self.lookup([entry.key])[entry.key]

    def settle_absent(self, row: int, *, input_name: str | None = None) -> LedgerEntry:
        """A person found the row in doubt is not in Givebutter: record it `failed`, so that
        the next run sends it without looking. Committed at once."""
        entry = self._entry_to_settle(row, input_name, ("sending",))
        self._settle(entry.key, EntryState.FAILED, None, "not on the server (settled by hand)")
        return self.lookup([entry.key])[entry.key]

    def _entry_to_settle(
        self, row: int, input_name: str | None, states: tuple[str, ...]
    ) -> LedgerEntry:
        marks = ",".join("?" * len(states))
        query = f"SELECT {_COLUMNS} FROM entries WHERE row = ? AND state IN ({marks})"
        params: list[Any] = [int(row), *states]
        if input_name is not None:
            query += " AND input_name = ?"
            params.append(input_name)
        found = [_entry(values) for values in self._rows(query, params)]
        if not found:
            what = " or ".join(states)
            raise ConfigError(f"no entry of row {row} is {what} in the ledger {self._where}")
        if len(found) > 1:
            names = ", ".join(sorted({entry.input_name for entry in found}))
            raise ConfigError(
                f"row {row} has {len(found)} entries that could be meant ({names}); "
                "name the input file too"
            )
        return found[0]

    def _settle(self, key: str, state: EntryState, activity_id: str | None, error: str) -> None:
        self._results.pop(key, None)
        with translate_errors(self._where), transaction(self._db):
            self._db.execute(
                "UPDATE entries SET state = ?, activity_id = ?, error = ?, http_status = NULL, "
                "updated_at = ? WHERE key = ?",
                (state.value, activity_id, error, _now(), key),
            )

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        with translate_errors(self._where):
            return self._db.execute(query, params).fetchall()

    # -- writing ------------------------------------------------------------------------

    def mark_sending(self, entries: Iterable[NewEntry]) -> None:
        """Record `entries` as about to be posted: committed and fsynced when this returns.

        A key already `failed` or `sending` is marked again (its old error is cleared); a key
        already `created` is refused with `ValueError` and nothing of the batch is written,
        because posting it again is the duplicate the ledger exists to prevent.
        """
        now = _now()
        rows = [
            (e.key, e.contact_id, e.row, e.input_name, e.payload_json, now, now) for e in entries
        ]
        if not rows:
            return
        with translate_errors(self._where), transaction(self._db):
            changed = sum(
                self._db.execute(
                    _MARK_SENDING.format(values=",".join([_MARK_VALUES] * len(part))),
                    [value for row in part for value in row],
                ).rowcount
                for part in _chunks(rows, _ROWS_PER_STATEMENT)
            )
            if changed != len(rows):
                created = self._created_among([r[0] for r in rows])
                raise ValueError(f"already created, refusing to send again: {created}")

    def record_created(self, key: str, activity_id: str, attempts: int) -> None:
        """Buffer: the API created `key` as `activity_id`. Durable at the next `commit()`."""
        self._results[key] = (EntryState.CREATED.value, activity_id, "", None, attempts)

    def record_failed(self, key: str, error: str, attempts: int, http_status: int | None) -> None:
        """Buffer: the API definitely did not create `key`. Durable at the next `commit()`.

        Only for a definite answer. When the POST's fate is unknown (a timeout, a dropped
        connection), record nothing: the entry stays `sending` and `ambiguous()` lists it.
        """
        self._results[key] = (EntryState.FAILED.value, None, error, http_status, attempts)

    @property
    def pending_results(self) -> int:
        """How many results are buffered and not yet durable."""
        return len(self._results)

    def commit(self) -> list[str]:
        """Write every buffered result in one fsynced transaction; give the keys written.

        Every key must have been marked with `mark_sending()` first; if one was not,
        `ValueError` is raised, nothing is written and the buffer is kept.
        """
        if not self._results:
            return []
        now = _now()
        with translate_errors(self._where), transaction(self._db):
            if _UPDATE_FROM:
                rows = [(key, *result) for key, result in self._results.items()]
                changed = sum(
                    self._db.execute(
                        _RECORD_RESULTS.format(values=",".join([_RESULT_VALUES] * len(part))),
                        [now, *(value for row in part for value in row)],
                    ).rowcount
                    for part in _chunks(rows, _ROWS_PER_STATEMENT)
                )
            else:
                changed = self._db.executemany(
                    "UPDATE entries SET state = ?, activity_id = ?, error = ?, http_status = ?, "
                    "attempts = ?, updated_at = ? WHERE key = ?",
                    [(*result, now, key) for key, result in self._results.items()],
                ).rowcount
            if changed != len(self._results):
                unknown = sorted(set(self._results) - set(self.lookup(self._results)))
                raise ValueError(f"results for keys never marked sending: {unknown}")
        keys = list(self._results)
        self._results.clear()
        return keys

    def forget(self, key: str) -> None:
        """Remove `key` from the ledger (after its activity was deleted); committed at once."""
        self._results.pop(key, None)
        with translate_errors(self._where), transaction(self._db):
            self._db.execute("DELETE FROM entries WHERE key = ?", (key,))

    # -- helpers --------------------------------------------------------------------------

    def _created_among(self, keys: Sequence[str]) -> list[str]:
        entries = self.lookup(keys)
        return sorted(k for k, e in entries.items() if e.state is EntryState.CREATED)


def _entry(values: Sequence[Any]) -> LedgerEntry:
    key, state, *rest = values  # in _COLUMNS order, which is LedgerEntry's field order
    return LedgerEntry(key, EntryState(state), *rest)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """`items` in parts of `size`, the rest in parts of a power of two (largest first).

    A statement is written for its part's length, and sqlite3 keeps the last 128 it
    compiled: with a part of every length from 1 to `size` they filled that cache with
    large statements (9 MB over a 200,000-row run); now there are a few of each."""
    start = 0
    while start < len(items):
        left = len(items) - start
        step = size if left >= size else 1 << (left.bit_length() - 1)
        yield items[start : start + step]
        start += step

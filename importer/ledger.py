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
  ledger's lifetime. The kernel releases it when the process ends, however it ends. A second
  open raises `LedgerBusy` (or waits, with `wait=True`).
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

import fcntl
import functools
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from importer.errors import ConfigError
from importer.payload import ActivityPayload
from importer.private_files import ensure_private_file, make_private_folders

_T = TypeVar("_T")
_LOOKUP_CHUNK = 500  # well under SQLite's limit on parameters per statement
_PAGE = 1000  # rows fetched per query when iterating
_DEFAULT_PORTS = {"https": 443, "http": 80}

# One list of statements per schema version; entry N migrates version N to N + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE entries (
            key TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('sending', 'created', 'failed')),
            contact_id INTEGER NOT NULL,
            activity_id TEXT,
            row INTEGER NOT NULL,
            input_name TEXT NOT NULL,
            payload_json TEXT NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            http_status INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        )
        """,
        # Small by design: only entries left in `sending` are in it.
        "CREATE INDEX entries_sending ON entries (key) WHERE state = 'sending'",
    ),
    (  # rows with a source key (`key:`): see importer/key_records.py
        """
        CREATE TABLE records (
            account TEXT NOT NULL,
            source TEXT NOT NULL,
            key TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('new', 'live', 'gone', 'deleted')),
            contact TEXT NOT NULL DEFAULT '',
            contact_id INTEGER,
            activity_id TEXT,
            content_hash TEXT NOT NULL DEFAULT '',
            body_json TEXT NOT NULL DEFAULT '',
            pending TEXT CHECK (pending IN ('create', 'update', 'move', 'delete')),
            pending_contact TEXT,
            pending_contact_id INTEGER,
            pending_json TEXT,
            pending_hash TEXT,
            marked_at TEXT,
            previous_contact TEXT,
            previous_contact_id INTEGER,
            previous_activity_id TEXT,
            previous_json TEXT,
            previous_hash TEXT,
            last_change TEXT,
            run_id TEXT,
            row INTEGER,
            input_name TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (account, source, key)
        )
        """,
        "CREATE INDEX records_activity ON records (account, activity_id)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)  # stored in the file as PRAGMA user_version

# Writes go a few hundred rows to a statement, not one statement a row: the same B-tree work,
# a third of the time spent getting rows from Python to SQLite. 150 rows × 6 parameters stays
# under the 999 parameters the oldest SQLite allows in one statement.
_ROWS_PER_STATEMENT = 150
_MARK_VALUES = "(?, 'sending', ?, ?, ?, ?, ?)"
_MARK_SENDING = """
    INSERT INTO entries (key, state, contact_id, row, input_name, payload_json, updated_at)
    VALUES {values}
    ON CONFLICT (key) DO UPDATE SET
        state = 'sending', contact_id = excluded.contact_id, row = excluded.row,
        input_name = excluded.input_name, payload_json = excluded.payload_json,
        error = '', http_status = NULL, updated_at = excluded.updated_at
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
    "http_status, attempts, updated_at"
)


class LedgerBusy(ConfigError):
    """Another run holds the ledger's lock."""


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


def lock_path(path: Path) -> Path:
    """The sidecar file whose `flock` says which run owns the ledger at `path`."""
    return path.with_name(path.name + ".lock")


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
        self._db = connection
        self._lock_fd: int | None = lock_fd
        self._results: dict[str, tuple[Any, ...]] = {}

    @property
    def connection(self) -> sqlite3.Connection:
        """The open SQLite connection, for the ledger's companion tables (`key_records`)."""
        return self._db

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, wait: bool = False) -> Ledger:
        """Lock the ledger at `path` for this run and open it, creating it (0600) if need be.

        Raises `LedgerBusy` if another run holds it (unless `wait`, which blocks until it is
        free), and `ConfigError` if the file cannot be created or is not a ledger.
        """
        path = Path(path)
        try:
            make_private_folders(path.parent)
        except OSError as error:
            raise ConfigError(f"cannot create {path.parent}: {error.strerror or error}") from None
        lock_fd = _acquire_lock(path, wait=wait)
        try:
            connection = _connect(path)
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
            for values in self._db.execute(query, chunk):
                found[values[0]] = _entry(values)
        return found

    def is_empty(self) -> bool:
        """True if the ledger holds no entry at all (a first run: nothing to look up)."""
        return self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None

    def ambiguous(self) -> list[LedgerEntry]:
        """Committed entries still `sending`: marked, with no result committed since.

        At the start of a run these are the rows an earlier run may or may not have posted.
        """
        query = f"SELECT {_COLUMNS} FROM entries WHERE state = 'sending' ORDER BY input_name, row"
        return [_entry(values) for values in self._db.execute(query)]

    def created_entries(self) -> Iterator[LedgerEntry]:
        """Every `created` entry, in key order, read a page at a time.

        No statement stays open between pages, so the caller may `forget()` as it goes.
        """
        after = ""
        while True:
            page = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE state = 'created' AND key > ? "
                "ORDER BY key LIMIT ?",
                (after, _PAGE),
            ).fetchall()
            yield from (_entry(values) for values in page)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def stats(self) -> dict[EntryState, int]:
        """How many committed entries are in each state (every state present, maybe 0)."""
        counts = dict.fromkeys(EntryState, 0)
        for state, count in self._db.execute("SELECT state, count(*) FROM entries GROUP BY state"):
            counts[EntryState(state)] = count
        return counts

    # -- writing ------------------------------------------------------------------------

    def mark_sending(self, entries: Iterable[NewEntry]) -> None:
        """Record `entries` as about to be posted: committed and fsynced when this returns.

        A key already `failed` or `sending` is marked again (its old error is cleared); a key
        already `created` is refused with `ValueError` and nothing of the batch is written,
        because posting it again is the duplicate the ledger exists to prevent.
        """
        now = _now()
        rows = [(e.key, e.contact_id, e.row, e.input_name, e.payload_json, now) for e in entries]
        if not rows:
            return
        with _transaction(self._db):
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
        with _transaction(self._db):
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
        with _transaction(self._db):
            self._db.execute("DELETE FROM entries WHERE key = ?", (key,))

    # -- helpers --------------------------------------------------------------------------

    def _created_among(self, keys: Sequence[str]) -> list[str]:
        entries = self.lookup(keys)
        return sorted(k for k, e in entries.items() if e.state is EntryState.CREATED)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT; ROLLBACK if the block or the COMMIT fails."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _acquire_lock(path: Path, *, wait: bool) -> int:
    """Take the exclusive flock on `PATH.lock` and write our pid and start time into it."""
    sidecar = lock_path(path)
    try:
        fd = os.open(sidecar, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot open {sidecar}: {error.strerror or error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise LedgerBusy(
            f"another givebutter-import run is using the ledger {path} ({holder}); "
            "wait for it or use another ledger",
            setting="ledger_path",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # The file is never deleted: unlinking a lock file lets two runs lock two different files.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {_now()}\n".encode(), 0)
    return fd


def _read_holder(fd: int) -> str:
    """'pid N, started at T' from the lock file, as far as it can be read."""
    fields = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    if len(fields) != 2 or not fields[0].isdigit():
        return "pid unknown"  # the holder has not written it yet
    return f"pid {fields[0]}, started at {fields[1]}"


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating 0600) the SQLite file, set WAL and FULL sync, migrate the schema."""
    ensure_private_file(path)  # SQLite gives its -wal and -shm files this same mode
    # isolation_level=None: no implicit transactions; each write says BEGIN and COMMIT.
    # check_same_thread=False: a run calls it from a thread of its own (one call at a time).
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _configure(connection, path)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise ConfigError(f"{path} is not a usable givebutter-import ledger: {error}") from None
    except BaseException:
        connection.close()
        raise
    return connection


def _configure(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute("PRAGMA busy_timeout = 5000")  # an outside reader may hold it briefly
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise ConfigError(f"cannot use WAL mode for the ledger {path}; put it on a local disk")
    connection.execute("PRAGMA synchronous = FULL")
    _migrate(connection, path)


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION, one version per step, in one transaction."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the ledger {path} was written by a newer givebutter-import "
            f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade to use it"
        )
    if version == SCHEMA_VERSION:
        return
    with _transaction(connection):
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _entry(values: Sequence[Any]) -> LedgerEntry:
    key, state, *rest = values  # in _COLUMNS order, which is LedgerEntry's field order
    return LedgerEntry(key, EntryState(state), *rest)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")

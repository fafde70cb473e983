"""The ledger's file: where it lives by default, where it really is, its lock, its checks,
its schema, its errors.

What is promised
- One lock per file, whatever the path says: the path is resolved (symlinks, `..`) before
  the lock is taken, so two runs given `ledger.sqlite` and a symlink to it share one lock.
- A ledger is created whole or not at all: built under a temporary name beside it, then
  renamed into place. So a file at the ledger's path that is empty (0 bytes), or an SQLite
  database without the ledger's table, was never a ledger this program finished making:
  it was truncated, replaced, or is someone else's. Opening it stops with one line
  (`ConfigError`), because treating it as a new ledger would send every row again; with
  `new_ledger=True` an empty one (0 bytes, or an SQLite file with no tables) is taken as
  a new ledger. A file with anything else in it is never overwritten.
- Every SQLite failure on the way (a damaged page, a full disk, a path that is a folder)
  becomes a `LedgerError` of one line naming the file (`translate_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from importer.errors import ConfigError, LedgerError


def default_ledger_path() -> Path:
    """Where the ledger lives unless told otherwise: the user's data folder
    (`$XDG_DATA_HOME/givebutter-import/ledger.sqlite`, else under `~/.local/share`)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "givebutter-import" / "ledger.sqlite"


_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"

# One list of statements per schema version; entry N migrates version N to N + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    (
        # When the entry was marked `sending`: a search for it on the server looks no
        # earlier. Version 1 kept it only in `updated_at`, which a `sending` entry still has.
        "ALTER TABLE entries ADD COLUMN marked_at TEXT",
        "UPDATE entries SET marked_at = updated_at WHERE state = 'sending'",
        # Which activity ids a contact's created entries hold: claimed, not candidates.
        "CREATE INDEX entries_created_contact ON entries (contact_id) WHERE state = 'created'",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)  # stored in the file as PRAGMA user_version


class LedgerBusy(ConfigError):
    """Another run holds the ledger's lock."""


def real_path(path: Path) -> Path:
    """The file `path` names, symlinks and `..` resolved (it need not exist yet)."""
    return Path(os.path.realpath(path))


def lock_path(path: Path) -> Path:
    """The sidecar file whose `flock` says which run owns the ledger at `path` (resolved)."""
    real = real_path(path)
    return real.with_name(real.name + ".lock")


def shown(path: Path, real: Path) -> str:
    """The ledger as a person typed it, and where it really is when that differs."""
    return str(path) if real == Path(os.path.abspath(path)) else f"{path} (that is, {real})"


def acquire_lock(path: Path, *, wait: bool) -> int:
    """Take the exclusive flock on the resolved path's `.lock` and write our pid into it."""
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
            f"another givebutter-import run is using the ledger {shown(path, real_path(path))}"
            f" ({holder}); wait for it or use another ledger",
            setting="ledger_path",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # The file is never deleted: unlinking a lock file lets two runs lock two different files.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {now()}\n".encode(), 0)
    except OSError as error:
        os.close(fd)
        raise LedgerError(_os_words(sidecar, error)) from None
    return fd


def _read_holder(fd: int) -> str:
    """'pid N, started at T' from the lock file, as far as it can be read."""
    fields = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    if len(fields) != 2 or not fields[0].isdigit():
        return "pid unknown"  # the holder has not written it yet
    return f"pid {fields[0]}, started at {fields[1]}"


def connect(path: Path, real: Path, *, new_ledger: bool) -> sqlite3.Connection:
    """Open the ledger at `real` (the lock held), creating it whole if there is none."""
    where = shown(path, real)
    if real.is_dir():
        raise ConfigError(f"the ledger path {where} is a folder; give the path of a file")
    if real.exists():
        _check_existing(real, where, new_ledger=new_ledger)
    if not real.exists():
        _create(real, where)
    with translate_errors(where, opening=True):
        connection = sqlite3.connect(real, isolation_level=None, check_same_thread=False)
    try:
        with translate_errors(where, opening=True):
            _configure(connection, where)
    except BaseException:
        connection.close()
        raise
    return connection


def _check_existing(real: Path, where: str, *, new_ledger: bool) -> None:
    """Refuse a file that is not a ledger (see the module docstring); with `new_ledger`,
    clear an empty one so that a new ledger is made in its place."""
    with open(real, "rb") as f:
        head = f.read(len(_SQLITE_HEADER))
    if head and head != _SQLITE_HEADER:
        raise ConfigError(f"{where} is not a usable givebutter-import ledger: not an SQLite file")
    tables = _tables(real, where) if head else []
    if tables and "entries" not in tables:
        raise ConfigError(
            f"{where} is not a usable givebutter-import ledger: an SQLite database of "
            "something else; use another ledger",
            setting="ledger_path",
        )
    if tables:
        return
    if not new_ledger:
        what = "empty (0 bytes)" if not head else "an SQLite file with nothing in it"
        raise ConfigError(
            f"the ledger {where} is {what}: every row would be sent again; restore it from a "
            "backup, or say that a new ledger is meant",
            setting="new_ledger",
        )
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{real}{suffix}")


def _tables(real: Path, where: str) -> list[str]:
    with translate_errors(where, opening=True):
        uri = real.as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return [name for (name,) in db.execute("SELECT name FROM sqlite_master")]


def _create(real: Path, where: str) -> None:
    """Build a new ledger beside `real` and rename it into place: whole, or not there."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".new", dir=real.parent)
    except OSError as error:
        raise ConfigError(f"cannot create {where}: {error.strerror or error}") from None
    os.close(fd)  # mkstemp makes it 0600; SQLite gives its -wal and -shm files that mode
    try:
        with translate_errors(where, opening=True):
            new = sqlite3.connect(temporary, isolation_level=None)
        with translate_errors(where, opening=True), contextlib.closing(new) as db:
            _configure(db, where)
        os.rename(temporary, real)
        _fsync_directory(real.parent)
    except OSError as error:
        raise LedgerError(_os_words(real, error)) from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary + suffix)


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _configure(connection: sqlite3.Connection, where: str) -> None:
    connection.execute("PRAGMA busy_timeout = 5000")  # an outside reader may hold it briefly
    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise ConfigError(f"cannot use WAL mode for the ledger {where}; put it on a local disk")
    connection.execute("PRAGMA synchronous = FULL")
    _migrate(connection, where)


def _migrate(connection: sqlite3.Connection, where: str) -> None:
    """Bring the schema to SCHEMA_VERSION, one version per step, in one transaction."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the ledger {where} was written by a newer givebutter-import "
            f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade to use it"
        )
    if version == SCHEMA_VERSION:
        return
    with transaction(connection):
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT; ROLLBACK if the block or the COMMIT fails."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def translate_errors(where: str | Path, *, opening: bool = False) -> Iterator[None]:
    """Turn SQLite's and the OS's failures into one line naming the ledger."""
    try:
        yield
    except sqlite3.Error as error:
        raise LedgerError(_sqlite_words(where, error, opening=opening)) from None
    except OSError as error:
        raise LedgerError(_os_words(where, error)) from None


def _sqlite_words(where: str | Path, error: sqlite3.Error, *, opening: bool) -> str:
    said = str(error)
    if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in said:
        return f"the disk holding the ledger {where} is full; free some space and run again"
    if opening and "file is not a database" in said:
        return f"{where} is not a usable givebutter-import ledger: {said}"
    if isinstance(error, sqlite3.DatabaseError) and (
        "malformed" in said or "not a database" in said or "corrupt" in said
    ):
        return (
            f"the ledger {where} is damaged ({said}); restore it from a backup "
            "(a new ledger would send every row again)"
        )
    return f"cannot use the ledger {where}: {said}"


def _os_words(where: str | Path, error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding the ledger {where} is full; free some space and run again"
    return f"cannot write the ledger {where}: {error.strerror or error}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")

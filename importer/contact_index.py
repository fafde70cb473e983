"""The contact index: what one account's contacts were found to be, kept between runs.

It holds, per key (`email` or `external_id`), the contacts that carry it (id and archived
state), and how each answer was learnt:

- a **scan**: every contact listed (`GET /contacts`, all pages). It answers every key, as of
  the time the listing began (`scanned_at`): a key it does not hold has no contact;
- a **lookup**: one email looked up (`GET /contacts?email=`), or a contact created for it.
  It answers that email only, as of its own time;
- a **creation begun** (`creating`): a `POST /contacts` for that email may have gone out and
  its answer may be lost (a kill -9). Such an email is answered by nothing older than the
  creation: the resolver must look it up again before it creates anything.

An answer is used while it is younger than the resolver's `max_age`.

One index per account
- The file records the account it was made for: the API's base URL (normalised: scheme and
  host in lower case, no default port, no trailing slash) and a fingerprint of the key
  (HMAC-SHA256 under a random salt kept in the file: never the key, and not a hash anyone can
  test guesses against without the file). Opened for another base URL or key, or made by an
  earlier version that did not record its account, it is emptied and started afresh, and
  `open_index` says why in one line: its ids belong to someone else.
- The file is created 0600 in a directory created 0700; a SQLite file that is not an index
  is refused (`ConfigError`), never overwritten. Without a path, the index is in memory.

Durability: every write is one transaction (SQLite's default rollback journal, synchronous
FULL), so `begin_creations` is on disk before its `POST /contacts` goes out, and a creation's
answer is on disk (`record_lookups`) before its contact id is used.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from importer.errors import ConfigError
from importer.payload import CONTACT_ID_PATTERN

KeyKind = Literal["email", "external_id"]

# PRAGMA application_id of an index file ("GBCI"): tells our file from any other SQLite file.
_APPLICATION_ID = 0x47424349
_SCHEMA_VERSION = 2  # 1: external ids only, no account
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE keys (kind TEXT NOT NULL, value TEXT NOT NULL, contact_id INTEGER NOT NULL,"
    " archived INTEGER NOT NULL, PRIMARY KEY (kind, value, contact_id)) WITHOUT ROWID",
    "CREATE TABLE lookups (email TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE creating (email TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID",
)
_BATCH = 500  # keys per query: under SQLite's limit of bound parameters


@dataclass(frozen=True, slots=True)
class ContactMatch:
    """A contact that carries the key looked for: its id, and whether it is archived."""

    id: int
    archived: bool


@dataclass(frozen=True, slots=True)
class IndexedContact:
    """What the index keeps of a listed contact: its id, archived state and keys."""

    id: int
    archived: bool
    emails: tuple[str, ...]  # normalised
    external_ids: tuple[str, ...]

    @classmethod
    def of(cls, contact: Mapping[str, Any]) -> IndexedContact | None:
        """A contact resource as the index keeps it, or None without a usable id."""
        match = match_of(contact)
        if match is None:
            return None
        return cls(
            match.id, match.archived, tuple(addresses(contact)), tuple(external_ids(contact))
        )


@dataclass(frozen=True, slots=True)
class Account:
    """Whose contacts an index holds: the API's base URL, and the key's fingerprint under
    a salt (`fingerprint(salt)`; see `Sender.key_fingerprint`)."""

    base_url: str
    fingerprint: Callable[[bytes], str]


class ContactIndex:
    """One account's contact index (a file, or memory). Not thread-safe: one run's loop."""

    def __init__(self, db: sqlite3.Connection, path: Path | None) -> None:
        self._db = db
        self.path = path

    # -- what it knows ---------------------------------------------------------------------

    def scanned_at(self) -> float | None:
        """When the last complete scan began (time.time()), or None if there was none."""
        value = self._meta("scanned_at")
        return float(value) if value is not None else None

    def scanned_contacts(self) -> int:
        """How many contacts the last complete scan listed."""
        return int(self._meta("contacts") or 0)

    def answers(
        self, kind: KeyKind, values: Iterable[str], *, max_age: float, now: float | None = None
    ) -> dict[str, list[ContactMatch]]:
        """The contacts of each of `values` that a young enough answer covers (an empty list:
        no contact has it); values no such answer covers are left out."""
        now = time.time() if now is None else now
        wanted = list(dict.fromkeys(values))
        scanned = self.scanned_at()
        scan_young = scanned is not None and 0 <= now - scanned < max_age
        answered_at: dict[str, float] = {}
        if scan_young:
            assert scanned is not None
            answered_at = dict.fromkeys(wanted, scanned)
        if kind == "email":
            for email, at in self._select("SELECT email, at FROM lookups", "email", wanted):
                if 0 <= now - at < max_age:
                    answered_at[email] = max(at, answered_at.get(email, at))
            for email, began in self._select("SELECT email, at FROM creating", "email", wanted):
                if answered_at.get(email, began) <= began:
                    answered_at.pop(email, None)  # a creation may have landed since
        found: dict[str, list[ContactMatch]] = {value: [] for value in answered_at}
        query = "SELECT value, contact_id, archived FROM keys WHERE kind = ? AND"
        for value, contact_id, archived in self._select(query, "value", list(found), kind):
            found[value].append(ContactMatch(contact_id, bool(archived)))
        return found

    def creations_begun(self) -> set[str]:
        """Emails whose creation began and whose answer was never recorded."""
        return {email for (email,) in self._db.execute("SELECT email FROM creating")}

    # -- what it is told -------------------------------------------------------------------

    def replace_with_scan(self, contacts: Iterable[IndexedContact], began_at: float) -> int:
        """Make the index what a complete listing, begun at `began_at`, found; give how many
        contacts it held. Lookups older than the scan go (the scan knows better); creations
        begun and never answered stay (their answer may not have been listed)."""
        rows: list[tuple[str, str, int, int]] = []
        count = 0
        for contact in contacts:
            count += 1
            archived = int(contact.archived)
            rows += [("email", email, contact.id, archived) for email in contact.emails]
            rows += [("external_id", v, contact.id, archived) for v in contact.external_ids]
        with self._transaction() as db:
            db.execute("DELETE FROM keys")
            db.execute("DELETE FROM lookups WHERE at <= ?", (began_at,))
            db.executemany("INSERT OR IGNORE INTO keys VALUES (?, ?, ?, ?)", rows)
            _set_meta(db, {"scanned_at": repr(began_at), "contacts": str(count)})
        return count

    def record_lookups(
        self, answers: Mapping[str, list[ContactMatch]], at: float | None = None
    ) -> None:
        """Keep what emails were found to be (by a lookup, or a creation's answer) at `at`;
        a creation begun for one of them is over."""
        at = time.time() if at is None else at
        with self._transaction() as db:
            for email, matches in answers.items():
                db.execute("DELETE FROM keys WHERE kind = 'email' AND value = ?", (email,))
                db.executemany(
                    "INSERT OR IGNORE INTO keys VALUES ('email', ?, ?, ?)",
                    [(email, m.id, int(m.archived)) for m in matches],
                )
                db.execute("INSERT OR REPLACE INTO lookups VALUES (?, ?)", (email, at))
                db.execute("DELETE FROM creating WHERE email = ?", (email,))

    def begin_creations(self, emails: Iterable[str], at: float | None = None) -> None:
        """Note, durably, that contacts are about to be created for `emails`."""
        at = time.time() if at is None else at
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO creating VALUES (?, ?)", [(e, at) for e in emails]
            )

    def end_creations(self, emails: Iterable[str]) -> None:
        """Forget creations known not to have happened (the API refused them)."""
        with self._transaction() as db:
            db.executemany("DELETE FROM creating WHERE email = ?", [(e,) for e in emails])

    def close(self) -> None:
        self._db.close()

    # -- SQLite ----------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _select(self, query: str, column: str, values: list[str], *first: Any) -> Iterator[Any]:
        """Rows of `query` (ending in WHERE or AND) whose `column` is one of `values`."""
        joiner = " " if query.rstrip().endswith(("WHERE", "AND")) else " WHERE "
        for start in range(0, len(values), _BATCH):
            batch = values[start : start + _BATCH]
            marks = ", ".join("?" * len(batch))
            yield from self._db.execute(f"{query}{joiner}{column} IN ({marks})", (*first, *batch))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK and a `ConfigError` naming the file."""

    def __init__(self, db: sqlite3.Connection, path: Path | None) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        if kind is None:
            self._db.execute("COMMIT")
            return
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            where = self._path or "in memory"
            raise ConfigError(f"cannot write the contact index {where}: {error}") from None


# -- opening ---------------------------------------------------------------------------------


def open_index(path: Path | None, account: Account) -> tuple[ContactIndex, str | None]:
    """The index at `path` (None: a new one in memory) for `account`, and, if a file made for
    another account or server had to be emptied, one line saying why (else None).
    Raises `ConfigError` if the file cannot be made or is not a contact index."""
    if path is None:
        db = sqlite3.connect(":memory:", isolation_level=None)
        _create_schema(db)
        why = None
    else:
        db = _open_file(path)
        why = _made_for_another(db, account)
    try:
        if why is not None or _meta_of(db, "salt") is None:
            _start_afresh(db, account)
    except sqlite3.Error as error:
        db.close()
        raise ConfigError(f"cannot write the contact index {path}: {error}") from None
    return ContactIndex(db, path), (f"contact index {path}: {why}; started afresh" if why else None)


def normalise_base_url(url: str) -> str:
    """The base URL as compared between runs: scheme and host lower-cased, no default port,
    no user part, no trailing slash, no query."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    default = {"https": 443, "http": 80}.get(scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}{port}{parts.path.rstrip('/')}"


def _made_for_another(db: sqlite3.Connection, account: Account) -> str | None:
    """Why the index in `db` may not be used for `account`, or None if it may."""
    salt, base_url = _meta_of(db, "salt"), _meta_of(db, "base_url")
    if salt is None:
        if _meta_of(db, "earlier_version") is not None:
            return "it was made by an earlier version, which did not record the account"
        return None
    if base_url != normalise_base_url(account.base_url):
        return f"it was made for another server ({base_url})"
    if _meta_of(db, "key") != account.fingerprint(bytes.fromhex(salt)):
        return "it was made with another API key"
    return None


def _start_afresh(db: sqlite3.Connection, account: Account) -> None:
    salt = secrets.token_bytes(16)
    db.execute("BEGIN IMMEDIATE")
    for table in ("meta", "keys", "lookups", "creating"):
        db.execute(f"DELETE FROM {table}")
    meta = {
        "base_url": normalise_base_url(account.base_url),
        "salt": salt.hex(),
        "key": account.fingerprint(salt),
    }
    _set_meta(db, meta)
    db.execute("COMMIT")


def _meta_of(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _set_meta(db: sqlite3.Connection, values: Mapping[str, str]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())


def _open_file(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) the index file, with the current schema in place."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # an existing file keeps the mode its owner gave it
    except OSError as error:
        raise ConfigError(f"cannot create the contact index {path}: {error.strerror}") from None
    else:
        os.fchmod(fd, 0o600)  # whatever the umask; SQLite gives its journal the same mode
        os.close(fd)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        _prepare_schema(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _prepare_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, recreate it in an index of another version (it is
    only a cache), and refuse any other SQLite file (it is not ours to overwrite)."""
    not_ours = ConfigError(f"{path} is not a contact index; give another path")
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    except sqlite3.DatabaseError:
        raise not_ours from None
    if application_id == _APPLICATION_ID and version == _SCHEMA_VERSION:
        return
    if application_id not in (0, _APPLICATION_ID) or (application_id == 0 and tables):
        raise not_ours
    db.execute("BEGIN IMMEDIATE")
    for table in tables:
        db.execute(f'DROP TABLE "{table}"')
    _create_tables(db)
    if tables:  # an earlier version's index: it did not record its account
        db.execute("INSERT INTO meta VALUES ('earlier_version', ?)", (str(version),))
    db.execute("COMMIT")


def _create_schema(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    _create_tables(db)
    db.execute("COMMIT")


def _create_tables(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


# -- what a contact resource says ------------------------------------------------------------


def contact_id_of(contact: Mapping[str, Any]) -> int | None:
    """A contact's id as an int (the API may give it as a number or a string)."""
    value = contact.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and CONTACT_ID_PATTERN.fullmatch(value.strip()):
        return int(value)
    return None


def match_of(contact: Mapping[str, Any]) -> ContactMatch | None:
    """The contact as a match (id and archived state), or None without a usable id."""
    contact_id = contact_id_of(contact)
    if contact_id is None:
        return None
    return ContactMatch(contact_id, contact.get("archived_at") is not None)


def normalise_email(text: str) -> str:
    """An address as compared: trimmed and lower-cased; the rest as written (no dots or
    `+tags` dropped: whether those matter is the mail provider's business)."""
    return text.strip().lower()


def addresses(contact: Mapping[str, Any]) -> list[str]:
    """Every email of a contact (`emails[].value`, `primary_email`), normalised, once each."""
    listed = contact.get("emails")
    values = (
        [e.get("value") for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    )
    values.append(contact.get("primary_email"))
    found = (normalise_email(v) for v in values if isinstance(v, str))
    return list(dict.fromkeys(v for v in found if v))


def external_ids(contact: Mapping[str, Any]) -> list[str]:
    """`external_id` and the `external_id` of every `external_ids[]` entry (documented as
    objects `{id, label, external_id}`; a bare string is taken too), trimmed, blanks left
    out. Compared exactly: they are another system's keys."""
    listed = contact.get("external_ids")
    entries = listed if isinstance(listed, list) else []
    values = [contact.get("external_id")]
    values += [e.get("external_id") if isinstance(e, dict) else e for e in entries]
    found = (str(v).strip() for v in values if isinstance(v, str | int) and not isinstance(v, bool))
    return list(dict.fromkeys(v for v in found if v))

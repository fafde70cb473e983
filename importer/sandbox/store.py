"""The sandbox's memory: contacts and their activities, in SQLite.

`SandboxStore(None)` keeps everything in memory (gone when closed); `SandboxStore(path)` keeps
it in a file (WAL, synchronous=NORMAL), so a sandbox restarted on the same file finds the
contacts and activities it had. `importer.sandbox.seed.seed_store` fills an empty store with
the seeded contacts.

What it promises:
- Activity ids are strings of increasing integers ("1", "2", ...), never reused, even after
  a delete or a restart on the same file.
- Timestamps are stored and given back as aware UTC datetimes.
- It can be used from any thread (one connection behind a lock); every method is short, so
  a sandbox calls it straight from its event loop.
- Once closed, every method raises `StoreClosedError`.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from importer.payload import ActivityPayload

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    emails TEXT NOT NULL,
    phones TEXT NOT NULL,
    external_id TEXT,
    external_ids TEXT NOT NULL,
    archived_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contact_emails (
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    email TEXT NOT NULL  -- lower-cased, for the case-insensitive filter
);
CREATE INDEX IF NOT EXISTS contact_emails_email ON contact_emails(email);
CREATE INDEX IF NOT EXISTS contacts_name ON contacts(lower(first_name), lower(last_name));
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    type TEXT NOT NULL,
    subject TEXT,
    note TEXT,
    timezone TEXT,
    occurred_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activities_contact ON activities(contact_id, id);
"""


class StoreClosedError(RuntimeError):
    """The store was used after `close()`."""


@dataclass(frozen=True, slots=True)
class ContactPoint:
    """One email address or phone number of a contact, with its kind ("personal", "work")."""

    type: str
    value: str


@dataclass(frozen=True, kw_only=True)
class Contact:
    """A Givebutter contact as far as the importer cares. The first email/phone is primary."""

    id: int
    first_name: str = ""
    last_name: str = ""
    emails: tuple[ContactPoint, ...] = ()
    phones: tuple[ContactPoint, ...] = ()
    external_id: str | None = None
    external_ids: tuple[str, ...] = ()
    archived_at: datetime | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def primary_email(self) -> str | None:
        return self.emails[0].value if self.emails else None

    @property
    def primary_phone(self) -> str | None:
        return self.phones[0].value if self.phones else None


@dataclass(frozen=True, kw_only=True)
class Activity:
    """One stored activity of a contact."""

    id: str
    contact_id: int
    type: str
    subject: str | None
    note: str | None
    timezone: str | None
    occurred_at: datetime
    created_at: datetime
    updated_at: datetime


class SandboxStore:
    """Contacts and activities in one SQLite database (in memory, or a file)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path) if self.path else ":memory:", check_same_thread=False
        )
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (a file keeps its contents; memory is gone). Idempotent."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    def __enter__(self) -> SandboxStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise StoreClosedError("the sandbox store is closed")
            with self._db:
                yield self._db

    # -- contacts --------------------------------------------------------------------------

    def add_contact(self, contact: Contact) -> Contact:
        """Add one contact (its id must be new); give it back."""
        self.add_contacts([contact])
        return contact

    def add_contacts(self, contacts: Iterable[Contact]) -> int:
        """Add contacts in one transaction (ids must be new); give how many."""
        contacts = list(contacts)
        emails = [(c.id, email.value.lower()) for c in contacts for email in c.emails]
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?,?,?)",
                [_contact_row(contact) for contact in contacts],
            )
            db.executemany("INSERT INTO contact_emails VALUES (?, ?)", emails)
        return len(contacts)

    def add_rows(self, rows: Iterable[tuple[tuple[Any, ...], list[str]]]) -> int:
        """Add contacts given as stored rows (`row_of`) with their lower-cased emails, in
        one transaction: the fast way to seed many. Give how many."""
        contacts: list[tuple[Any, ...]] = []
        emails: list[tuple[Any, str]] = []
        for row, addresses in rows:
            contacts.append(row)
            emails.extend((row[0], address) for address in addresses)
        with self._transaction() as db:
            db.executemany("INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?,?,?)", contacts)
            db.executemany("INSERT INTO contact_emails VALUES (?, ?)", emails)
        return len(contacts)

    @staticmethod
    def row_of(contact: Contact) -> tuple[Any, ...]:
        """The `contacts` row that stores `contact`."""
        return _contact_row(contact)

    def create_contact(self, new: Contact, *, force: bool = False) -> tuple[Contact, bool]:
        """Create a contact as `POST /v1/contacts` does, with the next free id; give it and
        True. Givebutter's de-duplication: unless `force`, a contact with the same first and
        last name (ignoring case) and one of the same emails (ignoring case) or phones is
        given back instead, and False (archived or not: the reference does not say)."""
        with self._transaction() as db:
            if not force and (existing := _same_person(db, new)) is not None:
                return existing, False
            next_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM contacts").fetchone()[0]
            contact = dataclasses.replace(new, id=max(next_id, new.id))
            db.execute("INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?,?,?)", _contact_row(contact))
            db.executemany(
                "INSERT INTO contact_emails VALUES (?, ?)",
                [(contact.id, email.value.lower()) for email in contact.emails],
            )
        return contact, True

    def contact_archived(self, contact_id: int) -> bool | None:
        """Whether the contact is archived; None if there is no such contact. (What every
        activity request asks: cheaper than reading the whole contact.)"""
        with self._transaction() as db:
            row = db.execute(
                "SELECT archived_at IS NOT NULL FROM contacts WHERE id = ?", (contact_id,)
            ).fetchone()
        return bool(row[0]) if row else None

    def get_contact(self, contact_id: int) -> Contact | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM contacts WHERE id = ?", (contact_id,)).fetchone()
        return _contact(row) if row else None

    def list_contacts(
        self, *, email: str | None = None, offset: int = 0, limit: int = 20
    ) -> tuple[list[Contact], int]:
        """One page of contacts in id order, and the total; `email` matches any of a
        contact's addresses, ignoring case."""
        where = ""
        params: tuple[Any, ...] = ()
        if email is not None:
            where = "WHERE id IN (SELECT contact_id FROM contact_emails WHERE email = ?)"
            params = (email.lower(),)
        with self._transaction() as db:
            total = db.execute(f"SELECT count(*) FROM contacts {where}", params).fetchone()[0]
            rows = db.execute(
                f"SELECT * FROM contacts {where} ORDER BY id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [_contact(row) for row in rows], total

    def count_contacts(self) -> int:
        with self._transaction() as db:
            return int(db.execute("SELECT count(*) FROM contacts").fetchone()[0])

    # -- activities ------------------------------------------------------------------------

    def add_activity(self, contact_id: int, payload: ActivityPayload, now: datetime) -> Activity:
        """Store an activity made from a valid payload; `occurred_at` defaults to `now`."""
        occurred = payload.occurred_at or now
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO activities (contact_id, type, subject, note, timezone, occurred_at,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    contact_id,
                    payload.type.value,
                    payload.subject,
                    payload.note,
                    payload.timezone,
                    _text(occurred),
                    _text(now),
                    _text(now),
                ),
            )
            activity_id = cursor.lastrowid
        return Activity(
            id=str(activity_id),
            contact_id=contact_id,
            type=payload.type.value,
            subject=payload.subject,
            note=payload.note,
            timezone=payload.timezone,
            occurred_at=occurred.astimezone(UTC),
            created_at=now.astimezone(UTC),
            updated_at=now.astimezone(UTC),
        )

    def get_activity(self, contact_id: int, activity_id: str) -> Activity | None:
        """The activity, if it exists and belongs to this contact."""
        if not activity_id.isdecimal():
            return None
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM activities WHERE id = ? AND contact_id = ?",
                (int(activity_id), contact_id),
            ).fetchone()
        return _activity(row) if row else None

    def update_activity(
        self, contact_id: int, activity_id: str, payload: ActivityPayload, now: datetime
    ) -> Activity | None:
        """Replace the activity's fields with a valid payload's (a field the payload leaves
        out becomes null, except `occurred_at`, which is kept); `updated_at` becomes `now`.
        None (nothing changed) if it does not exist or belongs to another contact."""
        if not activity_id.isdecimal():
            return None
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE activities SET type = ?, subject = ?, note = ?, timezone = ?,"
                " occurred_at = coalesce(?, occurred_at), updated_at = ?"
                " WHERE id = ? AND contact_id = ?",
                (
                    payload.type.value,
                    payload.subject,
                    payload.note,
                    payload.timezone,
                    _text(payload.occurred_at) if payload.occurred_at else None,
                    _text(now),
                    int(activity_id),
                    contact_id,
                ),
            )
            row = db.execute(
                "SELECT * FROM activities WHERE id = ?", (int(activity_id),)
            ).fetchone()
        return _activity(row) if cursor.rowcount > 0 else None

    def find_activity(self, activity_id: str) -> Activity | None:
        """The activity with this id, whoever's it is: everything stored, subject and note
        included (for tests, which may look inside; the API shows less)."""
        if not activity_id.isdecimal():
            return None
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM activities WHERE id = ?", (int(activity_id),)
            ).fetchone()
        return _activity(row) if row else None

    def all_activities(self) -> list[Activity]:
        """Every stored activity in creation order, with everything stored (for tests)."""
        with self._transaction() as db:
            rows = db.execute("SELECT * FROM activities ORDER BY id").fetchall()
        return [_activity(row) for row in rows]

    def list_activities(
        self, contact_id: int, *, type: str | None = None, offset: int = 0, limit: int = 20
    ) -> tuple[list[Activity], int]:
        """One page of a contact's activities in creation order, and the total."""
        where = "WHERE contact_id = ?"
        params: tuple[Any, ...] = (contact_id,)
        if type is not None:
            where, params = where + " AND type = ?", (contact_id, type)
        with self._transaction() as db:
            total = db.execute(f"SELECT count(*) FROM activities {where}", params).fetchone()[0]
            rows = db.execute(
                f"SELECT * FROM activities {where} ORDER BY id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [_activity(row) for row in rows], total

    def delete_activity(self, contact_id: int, activity_id: str) -> bool:
        """Delete the activity if it belongs to this contact; give whether it did."""
        if not activity_id.isdecimal():
            return False
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM activities WHERE id = ? AND contact_id = ?",
                (int(activity_id), contact_id),
            )
        return cursor.rowcount > 0

    def count_activities(self, contact_id: int | None = None) -> int:
        """How many activities are stored, in all or for one contact."""
        with self._transaction() as db:
            if contact_id is None:
                row = db.execute("SELECT count(*) FROM activities").fetchone()
            else:
                row = db.execute(
                    "SELECT count(*) FROM activities WHERE contact_id = ?", (contact_id,)
                ).fetchone()
        return int(row[0])

    def activity_counts(self) -> dict[int, int]:
        """Activities per contact, for the contacts that have any."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT contact_id, count(*) FROM activities GROUP BY contact_id ORDER BY 1"
            ).fetchall()
        return {int(contact_id): int(number) for contact_id, number in rows}


def _same_person(db: sqlite3.Connection, new: Contact) -> Contact | None:
    """The first contact (by id) that Givebutter's de-duplication takes `new` to be."""
    if not new.first_name.strip() or not new.last_name.strip():
        return None
    emails = {e.value.strip().lower() for e in new.emails}
    phones = {p.value.strip() for p in new.phones}
    rows = db.execute(
        "SELECT * FROM contacts WHERE lower(first_name) = lower(?) AND lower(last_name) = lower(?)"
        " ORDER BY id",
        (new.first_name.strip(), new.last_name.strip()),
    )
    for row in rows:
        contact = _contact(row)
        if emails & {e.value.lower() for e in contact.emails} or phones & {
            p.value for p in contact.phones
        }:
            return contact
    return None


def moment_text(moment: datetime) -> str:
    """How the store writes a moment (ISO 8601, UTC)."""
    return moment.astimezone(UTC).isoformat()


_text = moment_text


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _contact_row(contact: Contact) -> tuple[Any, ...]:
    return (
        contact.id,
        contact.first_name,
        contact.last_name,
        json.dumps([{"type": e.type, "value": e.value} for e in contact.emails]),
        json.dumps([{"type": p.type, "value": p.value} for p in contact.phones]),
        contact.external_id,
        json.dumps(list(contact.external_ids)),
        _text(contact.archived_at) if contact.archived_at else None,
        _text(contact.created_at),
        _text(contact.updated_at),
    )


def _contact(row: tuple[Any, ...]) -> Contact:
    contact_id, first, last, emails, phones, external_id, external_ids = row[:7]
    archived, created, updated = row[7:]
    return Contact(
        id=contact_id,
        first_name=first,
        last_name=last,
        emails=tuple(ContactPoint(e["type"], e["value"]) for e in json.loads(emails)),
        phones=tuple(ContactPoint(p["type"], p["value"]) for p in json.loads(phones)),
        external_id=external_id,
        external_ids=tuple(json.loads(external_ids)),
        archived_at=_moment(archived),
        created_at=datetime.fromisoformat(created),
        updated_at=datetime.fromisoformat(updated),
    )


def _activity(row: tuple[Any, ...]) -> Activity:
    activity_id, contact_id, type_, subject, note, timezone, occurred, created, updated = row
    return Activity(
        id=str(activity_id),
        contact_id=contact_id,
        type=type_,
        subject=subject,
        note=note,
        timezone=timezone,
        occurred_at=datetime.fromisoformat(occurred),
        created_at=datetime.fromisoformat(created),
        updated_at=datetime.fromisoformat(updated),
    )

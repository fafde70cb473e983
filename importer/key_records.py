"""Source records: what the ledger knows of each row that has a source key (`key:`).

A nightly export is a stream of records with their own ids. With a key, a row is the record
(account, source, key), and its content (the contact as written plus the activity's body) is
a *version*: a new key is created, the same version is unchanged, a new version is updated
(or moved, when its contact changed), and a key gone from the source is deleted when asked.

One `KeyRecord` a key, in the ledger's file (table `records`), holding the contact and
activity it became, the hash and the body of what was last sent (so that it can be put back),
and, while a change is under way, that change (`pending`). The rules are the ledger's:

- `begin()` records the changes about to be made, committed and fsynced before it returns:
  no request goes out for a change the ledger does not know of.
- `finish()` only buffers what the API answered; `commit()` makes it durable.
- A change whose outcome is unknown (a timeout, a 5xx, a killed run) stays `pending`: the
  next run finishes it (an update or a deletion is simply made again, both being
  idempotent; a creation is looked for on the server before it is sent again).
- The content before each change is kept (`previous_*`) so that `undo` can restore it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from importer.ledger import Ledger, _chunks, _now, _transaction
from importer.records import Change

_LOOKUP_CHUNK = 300  # keys per query, with the account and source: under 999 parameters


class RecordState(StrEnum):
    NEW = "new"  # begun, never created
    LIVE = "live"  # its activity exists, as far as the ledger knows
    GONE = "gone"  # its activity was deleted in Givebutter by someone else (a 404)
    DELETED = "deleted"  # deleted by this tool because the key left the source


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key: str
    state: RecordState
    contact: str  # the contact as written in the file
    contact_id: int | None
    activity_id: str | None
    content_hash: str
    body_json: str
    pending: Change | None
    pending_contact_id: int | None
    pending_json: str | None
    pending_hash: str | None
    marked_at: str | None
    previous_contact: str | None
    previous_contact_id: int | None
    previous_activity_id: str | None
    previous_json: str | None
    previous_hash: str | None
    last_change: Change | None
    run_id: str | None
    row: int | None
    input_name: str | None


_COLUMNS = (
    "key, state, contact, contact_id, activity_id, content_hash, body_json, pending, "
    "pending_contact_id, pending_json, pending_hash, marked_at, previous_contact, "
    "previous_contact_id, previous_activity_id, previous_json, previous_hash, last_change, "
    "run_id, row, input_name"
)


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """The little of a record that tells whether a row is unchanged (`sync.is_unchanged`),
    and what an unchanged row's line shows."""

    state: RecordState
    pending: Change | None
    content_hash: str
    contact_id: int | None
    activity_id: str | None


@dataclass(frozen=True, slots=True)
class Begun:
    """A change about to be made to one record."""

    key: str
    change: Change
    contact: str
    contact_id: int
    body_json: str
    content_hash: str
    row: int
    input_name: str


def content_hash(contact: str, body_json: str) -> str:
    """A version of a record: the contact as written and the exact body."""
    return hashlib.blake2b(f"{contact}\n{body_json}".encode(), digest_size=16).hexdigest()


class KeyRecords:
    """The records of one account and one source, in an open ledger's file. Called from
    one thread at a time, as the ledger is."""

    def __init__(self, ledger: Ledger, account: str, source: str, run_id: str) -> None:
        self._db = ledger.connection
        self.account, self.source, self.run_id = account, source, run_id
        self._finished: list[tuple[str, tuple[Any, ...]]] = []

    # -- reading ------------------------------------------------------------------------

    def lookup(self, keys: Iterable[str]) -> dict[str, KeyRecord]:
        return {values[0]: _record(values) for values in self._select(_COLUMNS, keys)}

    def versions(self, keys: Iterable[str]) -> dict[str, KeyVersion]:
        """`lookup`'s lighter sibling (a third of its time): enough to tell unchanged rows."""
        columns = "key, state, pending, content_hash, contact_id, activity_id"
        return {
            key: KeyVersion(RecordState(state), Change(pending) if pending else None, *rest)
            for key, state, pending, *rest in self._select(columns, keys)
        }

    def _select(self, columns: str, keys: Iterable[str]) -> Iterator[Sequence[Any]]:
        for chunk in _chunks(list(dict.fromkeys(keys)), _LOOKUP_CHUNK):
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT {columns} FROM records WHERE account = ? AND source = ? "
                f"AND key IN ({marks})"
            )
            yield from self._db.execute(query, [self.account, self.source, *chunk])

    def live(self) -> Iterator[KeyRecord]:
        """Every record of this source whose activity exists (or is being changed)."""
        query = (
            f"SELECT {_COLUMNS} FROM records WHERE account = ? AND source = ? "
            "AND (state = 'live' OR pending = 'delete') ORDER BY key"
        )
        for values in self._db.execute(query, [self.account, self.source]).fetchall():
            yield _record(values)

    def count_live(self) -> int:
        query = "SELECT count(*) FROM records WHERE account = ? AND source = ? AND state = 'live'"
        (count,) = self._db.execute(query, [self.account, self.source]).fetchone()
        return int(count)

    # -- writing ------------------------------------------------------------------------

    def begin(self, changes: Sequence[Begun]) -> None:
        """Record changes about to be made: committed and fsynced when this returns."""
        if not changes:
            return
        now = _now()
        with _transaction(self._db):
            self._db.executemany(
                """
                INSERT INTO records (account, source, key, state, pending_contact, pending,
                    pending_contact_id, pending_json, pending_hash, marked_at, run_id, row,
                    input_name, updated_at)
                VALUES (?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (account, source, key) DO UPDATE SET
                    pending = excluded.pending, pending_contact = excluded.pending_contact,
                    pending_contact_id = excluded.pending_contact_id,
                    pending_json = excluded.pending_json, pending_hash = excluded.pending_hash,
                    marked_at = excluded.marked_at, run_id = excluded.run_id, row = excluded.row,
                    input_name = excluded.input_name, updated_at = excluded.updated_at
                """,
                [
                    (
                        self.account,
                        self.source,
                        c.key,
                        c.contact,
                        c.change.value,
                        c.contact_id,
                        c.body_json,
                        c.content_hash,
                        now,
                        self.run_id,
                        c.row,
                        c.input_name,
                        now,
                    )
                    for c in changes
                ],
            )

    def finish(self, key: str, change: Change, activity_id: str | None) -> None:
        """Buffer: `change` was made; the record's activity is now `activity_id` (None for a
        deletion). The content before it is kept for `undo`. Durable at `commit()`."""
        self._finished.append((key, (change.value, activity_id)))

    def fail(self, key: str) -> None:
        """Buffer: the API definitely refused the change; the record is as it was."""
        self._finished.append((key, ("failed", None)))

    def gone(self, key: str) -> None:
        """Buffer: the record's activity was deleted in Givebutter by someone else."""
        self._finished.append((key, ("gone", None)))

    def commit(self) -> None:
        if not self._finished:
            return
        now = _now()
        with _transaction(self._db):
            for key, (what, activity_id) in self._finished:
                self._db.execute(_FINISH[what], _finish_values(what, activity_id, now, key, self))
        self._finished.clear()

    def restore(self, record: KeyRecord, activity_id: str | None) -> None:
        """After `undo`: the record is as it was before its last change, its activity now
        `activity_id` (committed now). A deletion's undo keeps the content it had."""
        deleted = record.state is RecordState.DELETED
        with _transaction(self._db):
            self._db.execute(
                """
                UPDATE records SET state = 'live', activity_id = ?,
                    contact = ?, contact_id = ?, body_json = ?, content_hash = ?,
                    pending = NULL, last_change = NULL, previous_json = NULL,
                    previous_activity_id = NULL, previous_contact_id = NULL,
                    previous_contact = NULL, previous_hash = NULL, updated_at = ?
                WHERE account = ? AND source = ? AND key = ?
                """,
                (
                    activity_id,
                    record.contact if deleted else record.previous_contact,
                    record.contact_id if deleted else record.previous_contact_id,
                    record.body_json if deleted else record.previous_json,
                    record.content_hash if deleted else record.previous_hash,
                    _now(),
                    self.account,
                    self.source,
                    record.key,
                ),
            )

    def forget(self, key: str) -> None:
        """After `undo` of a creation: the ledger no longer knows the key (committed now)."""
        with _transaction(self._db):
            self._db.execute(
                "DELETE FROM records WHERE account = ? AND source = ? AND key = ?",
                (self.account, self.source, key),
            )


_DONE = """
    UPDATE records SET state = ?, previous_contact_id = contact_id,
        previous_activity_id = activity_id, previous_contact = contact,
        previous_json = CASE WHEN state IN ('live', 'deleted', 'gone') THEN body_json END,
        previous_hash = content_hash,
        contact = CASE WHEN pending = 'delete' THEN contact ELSE pending_contact END,
        contact_id = CASE WHEN pending = 'delete' THEN contact_id ELSE pending_contact_id END,
        activity_id = ?,
        body_json = CASE WHEN pending = 'delete' THEN body_json ELSE pending_json END,
        content_hash = CASE WHEN pending = 'delete' THEN content_hash ELSE pending_hash END,
        last_change = pending, pending = NULL, pending_contact = NULL,
        pending_contact_id = NULL, pending_json = NULL, pending_hash = NULL, updated_at = ?
    WHERE account = ? AND source = ? AND key = ?
"""
_FINISH = {
    "create": _DONE,
    "update": _DONE,
    "move": _DONE,
    "delete": _DONE,
    "failed": """
        UPDATE records SET pending = NULL, pending_contact_id = NULL, pending_json = NULL,
            pending_hash = NULL, updated_at = ?
        WHERE account = ? AND source = ? AND key = ?
    """,
    "gone": """
        UPDATE records SET state = 'gone', pending = NULL, pending_contact_id = NULL,
            pending_json = NULL, pending_hash = NULL, updated_at = ?
        WHERE account = ? AND source = ? AND key = ?
    """,
}


def _finish_values(
    what: str, activity_id: str | None, now: str, key: str, records: KeyRecords
) -> tuple[Any, ...]:
    where = (records.account, records.source, key)
    if what in ("failed", "gone"):
        return (now, *where)
    state = RecordState.DELETED if what == "delete" else RecordState.LIVE
    kept = activity_id if what != "delete" else None
    return (state.value, kept, now, *where)


def _record(values: Sequence[Any]) -> KeyRecord:
    """A row of `_COLUMNS`, which are `KeyRecord`'s fields in order."""
    fields = list(values)
    fields[1] = RecordState(fields[1])
    for at in (7, 17):  # pending, last_change
        fields[at] = Change(fields[at]) if fields[at] else None
    return KeyRecord(*fields)


def find_record(
    ledger: Ledger, account: str, activity_id: str
) -> tuple[KeyRecords, KeyRecord] | None:
    """The record (of any source of `account`) whose activity is, or was before its last
    change, `activity_id`; with its source's `KeyRecords`, to restore or forget it."""
    values = ledger.connection.execute(
        f"SELECT source, {_COLUMNS} FROM records WHERE account = ? "
        "AND (activity_id = ? OR previous_activity_id = ?) LIMIT 1",
        (account, activity_id, activity_id),
    ).fetchone()
    if values is None:
        return None
    return KeyRecords(ledger, account, values[0], "undo"), _record(values[1:])

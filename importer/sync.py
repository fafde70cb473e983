"""Sync: what to do with a row that has a source key, given what the ledger knows of it.

`plan(row, record)` answers from the row's version (the contact as written plus the exact
body, hashed) and the key's `KeyRecord`:

| the ledger knows                         | the row             | plan                       |
|------------------------------------------|---------------------|----------------------------|
| nothing, or a key this tool deleted      |                     | create                     |
| the same version, no change under way    |                     | unchanged (no request)     |
| another version, same contact            |                     | update (PUT)               |
| another version, another contact         |                     | move (delete, then create) |
| its activity deleted in Givebutter       | not asked to        | failed: "was deleted"      |
| an update or deletion under way          |                     | made again (idempotent)    |

A creation or a move left under way by an earlier run is looked for on the server first
(`delivery` does that, since it needs the sender); `plan` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from importer.dry_run import UNRESOLVED
from importer.feed import ToSend
from importer.key_records import KeyRecord, KeyRecords, KeyVersion, RecordState
from importer.payload import ActivityPayload
from importer.records import Change, Outcome, Status
from importer.recover import Absent, Claims, Sought, Unknown
from importer.seen_keys import SeenKeys

if TYPE_CHECKING:
    from importer.sender_protocol import ActivitySender

LOOKED_FOR = (Change.CREATE, Change.MOVE)  # changes left under way whose activity is sought
LOOKED_FIRST = "an earlier run may have created it: the real run looks for it first"

GONE = (
    "activity {activity} was deleted in Givebutter since it was sent; not recreated "
    "(recreating deleted activities must be asked for)"
)


@dataclass(frozen=True, slots=True)
class Plan:
    change: Change | None  # None: no request (unchanged, or refused: see `refusal`)
    activity_id: str | None = None  # the activity to update or delete
    old_contact_id: int | None = None  # move: where the old activity is
    refusal: str = ""  # why the row is not sent although it changed


UNCHANGED = Plan(None)
CREATE = Plan(Change.CREATE)


def is_unchanged(record: KeyRecord | KeyVersion | None, version: str) -> bool:
    """The ledger's record of this key is this very version, with nothing under way."""
    return (
        record is not None
        and record.state is RecordState.LIVE
        and record.pending is None
        and record.content_hash == version
    )


def plan(
    record: KeyRecord | None, version: str, contact_id: int, *, recreate_deleted: bool
) -> Plan:
    """What to do with a row of this version and this contact (see the module's table)."""
    if record is None or record.state in (RecordState.NEW, RecordState.DELETED):
        return CREATE
    if record.state is RecordState.GONE:
        if recreate_deleted:
            return CREATE
        return Plan(None, refusal=GONE.format(activity=record.activity_id))
    if is_unchanged(record, version):
        return UNCHANGED
    if record.contact_id == contact_id:
        return Plan(Change.UPDATE, activity_id=record.activity_id)
    return Plan(Change.MOVE, activity_id=record.activity_id, old_contact_id=record.contact_id)


def changed_fields(before_json: str, after_json: str) -> list[str]:
    """The payload fields whose values differ between two bodies, in a stable order."""
    try:
        before, after = json.loads(before_json or "{}"), json.loads(after_json or "{}")
    except ValueError:
        return []
    return sorted(name for name in {*before, *after} if before.get(name) != after.get(name))


class KeyedRows:
    """Delivery's side of rows with a source key: a key repeated in the input, a row whose
    version the ledger knows already (`unchanged`, settled before its contact is looked up),
    and the plan for the rest. `put` reports a row decided here; `found` records a change an
    earlier run left under way and this run found on the server."""

    def __init__(
        self,
        records: KeyRecords | None,
        *,
        recreate_deleted: bool,
        dry_run: bool,
        in_thread: Callable[..., Awaitable[Any]],
        put: Callable[[int, Outcome], None],
        found: Callable[[ToSend, str], None],
        doubt: Callable[[ToSend, str], None],
        claims: Callable[[int], Awaitable[Claims]],
    ) -> None:
        self.records = records
        self.recreate_deleted, self.dry_run = recreate_deleted, dry_run
        self._in_thread, self._put, self._found = in_thread, put, found
        self._doubt, self._claims = doubt, claims  # a look that could not tell; the ledger's
        self.chunk_records: dict[str, KeyRecord] = {}  # the current chunk's keys, as known
        self.prepared: dict[int, ToSend] = {}  # seq -> rows made ready while settling
        self.seen_keys = SeenKeys()  # source key -> first row with it, in this run
        self.updates_refused = ""  # the API said it does not take updates: why

    async def settle(
        self, rows: list[tuple[int, Outcome]], to_send: Callable[[int, Outcome], ToSend]
    ) -> None:
        """Before contacts are looked up: a key repeated in the input is invalid; a row whose
        key the ledger knows in this very version is `unchanged` (its contact is known)."""
        keyed = [(seq, o) for seq, o in rows if o.status is Status.VALID and o.key]
        if not keyed:
            return
        fresh = []
        self.seen_keys.look_ahead(outcome.key for _, outcome in keyed)
        for seq, outcome in keyed:
            first = self.seen_keys.setdefault(outcome.key, outcome.row)
            if first != outcome.row:
                outcome.status = Status.INVALID
                outcome.error = f"key {outcome.key} repeats row {first}'s: one row a record"
            else:
                fresh.append((seq, outcome))
        self.chunk_records = {}
        if self.records is None:
            self.prepared.update((seq, to_send(seq, outcome)) for seq, outcome in fresh)
            return
        known = await self._in_thread(self.records.versions, [o.key for _, o in fresh])
        for seq, outcome in fresh:
            row = to_send(seq, outcome)
            version = known.get(outcome.key)
            if is_unchanged(version, row.version):
                assert version is not None
                outcome.status, outcome.activity_id = Status.UNCHANGED, version.activity_id
                outcome.contact_id, outcome.found_by = version.contact_id, "ledger"
            else:
                self.prepared[seq] = row
        changed = [self.prepared[seq].key for seq, _ in fresh if seq in self.prepared]
        if changed:  # the whole record, for the plan: a few rows of a nightly file
            self.chunk_records = await self._in_thread(self.records.lookup, changed)

    def take_prepared(self, seq: int) -> ToSend | None:
        """The row `settle` made ready at `seq`, if it did (once)."""
        return self.prepared.pop(seq) if seq in self.prepared else None

    def pending_look(self, key: str) -> int | None:
        """The contact whose activities `admit` will look through for the row of `key` (a
        creation or move an earlier run left under way), or None if it will not look."""
        record = self.chunk_records.get(key)
        if self.dry_run or record is None or record.pending_json is None:
            return None
        return (record.pending_contact_id or 0) if record.pending in LOOKED_FOR else None

    async def admit(self, row: ToSend, sender: ActivitySender) -> bool:
        """Decide a valid row with a source key: True to send its change."""
        outcome = row.outcome
        record = self.chunk_records.get(row.key)
        if record is not None and record.pending in LOOKED_FOR:
            record = await self._look_for_pending(row, record, sender)
            if record is None:  # found: the earlier run's change is this row's, done
                return False
        contact_id = outcome.contact_id
        if contact_id is None:  # a dry run that did not look contacts up
            same = record is not None and record.contact == outcome.contact
            contact_id = (record.contact_id if record is not None and same else None) or -1
            outcome.warnings.append(UNRESOLVED)
        decided = plan(record, row.version, contact_id, recreate_deleted=self.recreate_deleted)
        if decided.refusal or (decided.change is Change.UPDATE and self.updates_refused):
            outcome.status, outcome.error = Status.FAILED, decided.refusal or self.updates_refused
            outcome.activity_id = record.activity_id if record else None
            self._put(row.seq, outcome)
            return False
        assert decided.change is not None  # unchanged rows were settled before
        row.change, row.activity_id = decided.change, decided.activity_id
        row.old_contact_id = decided.old_contact_id
        if record is not None and decided.change is Change.UPDATE:
            fields = changed_fields(record.body_json, row.body_json)
            outcome.warnings.append("changed: " + (", ".join(fields) or "the contact as written"))
        elif record is not None and decided.change is Change.MOVE:
            outcome.warnings.append(f"contact changed from {record.contact_id}")
        return True

    async def _look_for_pending(
        self, row: ToSend, record: KeyRecord, sender: ActivitySender
    ) -> KeyRecord | None:
        """A creation or move an earlier run left under way: look for its new activity on
        the server. Found: recorded, and None (the row is decided); else the record."""
        contact_id = self.pending_look(row.key)
        if contact_id is None:  # a dry run, or nothing to look for
            row.outcome.warnings.append(LOOKED_FIRST) if self.dry_run else None
            return record
        assert record.pending_json is not None  # `pending_look` found something to look for
        payload = ActivityPayload.model_validate_json(record.pending_json)
        sought = Sought(contact_id, payload, _instant(record.marked_at), row.outcome.row)
        found = await sender.search_activity(sought, await self._claims(contact_id))
        if isinstance(found, Absent):
            return record
        if isinstance(found, Unknown):  # still under way: the next run looks again
            self._doubt(row, found.reason)
            return None
        if record.pending is Change.MOVE:  # the old one may still be there: delete it
            row.found_id = found.activity_id
            return record
        row.outcome.contact_id = record.pending_contact_id
        self._found(row, found.activity_id)
        return None


def _instant(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def deletion(seq: int, record: KeyRecord) -> ToSend:
    """A line for a key that left the source: delete its activity."""
    payload = ActivityPayload.model_validate_json(record.body_json)
    outcome = Outcome(
        row=0,
        status=Status.VALID,
        key=record.key,
        contact=record.contact,
        contact_id=record.contact_id,
        found_by="ledger",
        payload=payload,
    )
    outcome.warnings.append(f"the key is no longer in the source (last in row {record.row})")
    return ToSend(
        seq,
        outcome,
        record.key,
        record.body_json,
        record.content_hash or "-",
        change=Change.DELETE,
        activity_id=record.activity_id,
    )

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
from dataclasses import dataclass

from importer.key_records import KeyRecord, RecordState
from importer.records import Change

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


def is_unchanged(record: KeyRecord | None, version: str) -> bool:
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

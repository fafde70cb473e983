"""The small typed records that the stages hand one another."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping import CONTACT_KINDS
from importer.payload import FIELD_NAMES, ActivityPayload, validate_payload

# Why a row was not sent, or not heard back from, when a run stopped early.
NOT_SENT_INTERRUPTED = "not sent: the run was interrupted"  # never handed to the sender
INTERRUPTED_IN_FLIGHT = "interrupted"  # its request was abandoned: it may have landed
KEY_REFUSED = "not sent: the API refused the key"


class Change(StrEnum):
    """What a request does to a row's activity."""

    CREATE = "create"
    UPDATE = "update"  # PUT the row's content onto its activity
    MOVE = "move"  # its contact changed: delete the old activity, create one on the new
    DELETE = "delete"  # its key left the source (delete-missing)


class Status(StrEnum):
    """What became of one input row; exactly one per row, in the results CSV."""

    CREATED = "created"  # sent, and the API answered with an activity id
    VALID = "valid"  # dry run: would be sent
    INVALID = "invalid"  # the row cannot become a valid request
    SKIPPED = "skipped"  # left out on purpose (a skip rule, or already imported)
    FAILED = "failed"  # sent, and the API refused it or never answered
    # With a source key (`key:` in the mapping), a row is a record that may have changed:
    UPDATED = "updated"  # its activity was changed in place (PUT)
    UNCHANGED = "unchanged"  # the same as last sent: no request
    MOVED = "moved"  # its contact changed: the old activity deleted, a new one created
    DELETED = "deleted"  # its key left the source (--delete-missing): activity deleted
    # A dry run that reads the ledger says what the real run would do:
    WOULD_CREATE = "would create"
    WOULD_UPDATE = "would update"
    WOULD_MOVE = "would move"
    WOULD_DELETE = "would delete"
    ALREADY_IMPORTED = "already imported"


@dataclass(slots=True)
class MappedRow:
    """One source row after the map stage: a payload, or the reasons it has none."""

    row: int  # the spreadsheet row number a person sees
    contact: str  # the contact key as written in the file (an id, later an email...)
    payload: ActivityPayload | None = None
    errors: list[str] = field(default_factory=list)
    skipped_by: str | None = None  # the skip rule that matched
    warnings: list[str] = field(default_factory=list)  # e.g. "subject truncated to 255"


@dataclass(slots=True)
class MappedChunk:
    """A chunk of source rows after the map stage, column by column (positions 0..n-1).

    A row is skipped when `skipped` names the rule that matched; else invalid when `errors`
    holds reasons for it; else valid, and its payload is made of its `values`: a blank ("")
    is left out, or sent as null where the field's mapping says `send_null`.
    """

    rows: list[int]  # spreadsheet row numbers
    contacts: pa.Array  # text: the contact key, an id or `kind:value` to look up
    values: dict[str, pa.Array]  # payload field -> text; occurred_at in ISO 8601, UTC
    send_null: frozenset[str]
    skipped: list[str]  # "" or the skip rule that matched
    errors: dict[int, list[str]]  # position -> reasons (never a skipped position)
    warnings: dict[int, list[str]]  # position -> warnings (never a skipped position)
    keys: pa.Array | None = None  # text: each row's source key (`key:`), "" where blank
    # `NewContact` field -> text, when the mapping says how to create a missing contact.
    new_contacts: dict[str, pa.Array] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def new_contact_list(self) -> list[NewContact | None]:
        """Each row's `NewContact` (None for all if the mapping creates no contacts)."""
        if self.new_contacts is None:
            return [None] * len(self.rows)
        columns = {name: cells.to_pylist() for name, cells in self.new_contacts.items()}
        return [
            NewContact(**{name: cells[i] for name, cells in columns.items()})
            for i in range(len(self.rows))
        ]

    def bodies(self, positions: Iterable[int]) -> list[dict[str, str | None]]:
        """The payload fields of the rows at `positions`, as the mapping sets them."""
        columns = {name: values.to_pylist() for name, values in self.values.items()}
        bodies = []
        for i in positions:
            body: dict[str, str | None] = {}
            for name, cells in columns.items():
                if cells[i] != "":
                    body[name] = cells[i]
                elif name in self.send_null:
                    body[name] = None
            bodies.append(body)
        return bodies

    def mapped_rows(self) -> list[MappedRow]:
        """The rows one by one, each with its payload or its reasons."""
        contacts = self.contacts.to_pylist()
        rows = []
        for i, body in enumerate(self.bodies(range(len(self.rows)))):
            mapped = MappedRow(row=self.rows[i], contact=contacts[i])
            if self.skipped[i]:
                mapped.skipped_by = self.skipped[i]
            else:
                mapped.warnings = list(self.warnings.get(i, ()))
                mapped.errors = list(self.errors.get(i, ()))
                if not mapped.errors:
                    # Each field was validated through the model already; this builds it.
                    mapped.payload, mapped.errors = validate_payload(body)
            rows.append(mapped)
        return rows


@dataclass(slots=True, frozen=True)
class NewContact:
    """What a row says of its person, for creating the contact if none has its email (the
    mapping's `contact: {create: ...}`): trimmed text, "" where the row's cell is blank."""

    first_name: str = ""
    last_name: str = ""
    phone: str = ""


@dataclass(slots=True, frozen=True)
class SendResult:
    """What the sender learned from the API about one row."""

    status: Status  # CREATED or FAILED
    http_status: int | None = None
    activity_id: str | None = None
    attempts: int = 0
    error: str = ""
    # Some try's effect is unknown (a timeout, a dropped connection, a 5xx): if FAILED,
    # the activity may exist all the same; if CREATED, a retry may have made a duplicate.
    ambiguous: bool = False
    gone: bool = False  # an update found no activity (404): someone deleted it in Givebutter
    unsupported: bool = False  # the API does not take this kind of request (405, 422 on PUT)

    @property
    def in_doubt(self) -> bool:
        """Failed, yet the activity may exist: the row stays `sending` in the ledger and the
        next run looks for it before sending it again."""
        return self.status is Status.FAILED and self.ambiguous


@dataclass(slots=True)
class Outcome:
    """The final word on one input row: one line of the results CSV."""

    row: int
    status: Status
    contact: str = ""
    contact_id: int | None = None
    key: str = ""  # the source record's own id (`key:` in the mapping), if any
    found_by: str = ""  # which key found the contact: id, email, external_id or created
    payload: ActivityPayload | None = None
    new_contact: NewContact | None = None  # how to create the contact, if the mapping says
    http_status: int | None = None
    activity_id: str | None = None
    attempts: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    in_doubt: bool = False  # FAILED, yet the activity may exist (see `SendResult.in_doubt`)
    body: dict[str, Any] | None = None  # `payload.to_body()`, once made (`made_body`)

    def made_body(self) -> dict[str, Any]:
        """The payload's request body, made once: sending and the results line both need it."""
        if self.body is None:
            assert self.payload is not None
            self.body = self.payload.to_body()
        return self.body


# A column of a block: a Python list, or a pyarrow array (a dry run's, never per row).
Cells: TypeAlias = list[Any] | pa.Array

# The `kind:` the mapper puts before a contact key that is not an id, for the resolver.
_KIND_PREFIX = "^(?:" + "|".join(kind for kind in CONTACT_KINDS if kind != "id") + "):"


def contact_as_written(keys: list[Any] | pa.Array) -> list[Any] | pa.Array:
    """Contact keys as the file wrote them (`email:a@b.org` is shown as `a@b.org`)."""
    if isinstance(keys, list):
        return [re.sub(_KIND_PREFIX, "", key, count=1) for key in keys]
    return pc.replace_substring_regex(keys, _KIND_PREFIX, "", max_replacements=1)


@dataclass(slots=True)
class OutcomeBlock:
    """The outcomes of consecutive rows, column by column: what the results CSV is written
    from. A dry run makes one per chunk without a per-row object; a sending run makes one
    from the `Outcome`s it decided (`of`)."""

    rows: list[int | None]  # None: a line for no input row (a key deleted from the source)
    statuses: list[Status]
    contacts: Cells  # str: the key (`kind:value` for non-ids); shown by `contact_as_written`
    contact_ids: Cells  # int | None
    found_by: Cells  # str
    errors: list[str]
    warnings: dict[int, list[str]]  # position -> warnings
    values: dict[str, Cells]  # payload field -> text, "" where the row has no payload
    http_statuses: list[int | None] | None = None  # None: nothing was sent
    activity_ids: list[str] | None = None
    attempts: list[int] | None = None
    keys: Cells | None = None  # str: source keys, None where the mapping has no `key:`

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> OutcomeBlock:
        bodies = [o.made_body() if o.payload is not None else {} for o in outcomes]
        values: dict[str, Cells] = {}
        for name in FIELD_NAMES:
            column = ["" if b.get(name) is None else str(b[name]) for b in bodies]
            if any(column):
                values[name] = column
        return cls(
            rows=[o.row or None for o in outcomes],
            statuses=[o.status for o in outcomes],
            keys=[o.key for o in outcomes],
            contacts=[o.contact for o in outcomes],
            contact_ids=[o.contact_id for o in outcomes],
            found_by=[o.found_by for o in outcomes],
            errors=[o.error for o in outcomes],
            warnings={i: o.warnings for i, o in enumerate(outcomes) if o.warnings},
            values=values,
            http_statuses=[o.http_status for o in outcomes],
            activity_ids=[o.activity_id or "" for o in outcomes],
            attempts=[o.attempts for o in outcomes],
        )

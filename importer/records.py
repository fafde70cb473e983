"""The small typed records that the stages hand one another."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from importer.payload import ActivityPayload


class Status(StrEnum):
    """What became of one input row; exactly one per row, in the results CSV."""

    CREATED = "created"  # sent, and the API answered with an activity id
    VALID = "valid"  # dry run: would be sent
    INVALID = "invalid"  # the row cannot become a valid request
    SKIPPED = "skipped"  # left out on purpose (a skip rule, or already imported)
    FAILED = "failed"  # sent, and the API refused it or never answered


@dataclass(slots=True)
class MappedRow:
    """One source row after the map stage: a payload, or the reasons it has none."""

    row: int  # the spreadsheet row number a person sees
    contact: str  # the contact key as written in the file (an id, later an email...)
    payload: ActivityPayload | None = None
    errors: list[str] = field(default_factory=list)
    skipped_by: str | None = None  # the skip rule that matched
    warnings: list[str] = field(default_factory=list)  # e.g. "subject truncated to 255"


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


@dataclass(slots=True)
class Outcome:
    """The final word on one input row: one line of the results CSV."""

    row: int
    status: Status
    contact: str = ""
    contact_id: int | None = None
    found_by: str = ""  # which key found the contact: id, email or external_id
    payload: ActivityPayload | None = None
    http_status: int | None = None
    activity_id: str | None = None
    attempts: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)

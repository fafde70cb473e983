"""`givebutter-import init`: a starter mapping guessed from an export's header and first rows.

The guess is a first draft to edit, never a silent decision: every guessed line says so in
a comment, and `givebutter-import check` validates the result against the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd
import yaml

from importer.mapping import normalize_key
from importer.payload import ActivityType
from importer.read import SourceTable

# Column-name patterns, in order of preference, for each part of a mapping.
_GUESSES: dict[str, list[str]] = {
    "id": [
        r"givebutter.*id",
        r"^gb.?id",
        r"contact.?id",
        r"^contact$",
        r"donor.?id",
        r"constituent.?id",
        r"account.?id",
    ],
    "email": [r"e-?mail"],
    "external_id": [r"external.?id", r"legacy.?id", r"crm.?id", r"record.?id", r"^id$"],
    "type": [
        r"activity.?type",
        r"interaction.?type",
        r"^type$",
        r"type",
        r"channel",
        r"method",
        r"category",
    ],
    "occurred_at": [r"occurred", r"activity.?date", r"^date", r"date", r"time", r"when"],
    "subject": [r"subject", r"title", r"summary", r"purpose"],
    "note": [r"note", r"description", r"comment", r"body", r"details", r"content"],
}

_TYPE_WORDS: list[tuple[str, ActivityType]] = [
    ("volunteer", ActivityType.VOLUNTEER_ACTIVITY),
    ("shift", ActivityType.VOLUNTEER_ACTIVITY),
    ("task", ActivityType.COMPLETED_TASK),
    ("todo", ActivityType.COMPLETED_TASK),
    ("sms", ActivityType.SMS),
    ("text", ActivityType.SMS),
    ("call", ActivityType.PHONE_CALL),
    ("phone", ActivityType.PHONE_CALL),
    ("voicemail", ActivityType.PHONE_CALL),
    ("mail", ActivityType.EMAIL),
    ("meet", ActivityType.MEETING),
    ("visit", ActivityType.MEETING),
    ("lunch", ActivityType.MEETING),
    ("event", ActivityType.MEETING),
    ("note", ActivityType.NOTE),
]

_DATE_FORMATS = [
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%b %d, %Y",
    "%d %b %Y",
    "%m/%d/%y",
    "%m-%d-%Y",
]


def guess_column(columns: Iterable[str], part: str, taken: set[str]) -> str | None:
    """The first column whose name fits `part`'s patterns, not already used."""
    names = [c for c in columns if c not in taken]
    for pattern in _GUESSES[part]:
        for name in names:
            if re.search(pattern, name, flags=re.IGNORECASE):
                return name
    return None


def guess_type(value: str) -> ActivityType | None:
    folded = value.casefold()
    if folded in {t.value for t in ActivityType}:
        return ActivityType(folded)
    return next((kind for word, kind in _TYPE_WORDS if word in folded), None)


def guess_date_formats(samples: list[str]) -> list[str]:
    """Formats that read every sample (ISO 8601 needs none); at most two, most specific first."""
    samples = [s for s in samples if s]
    if (
        not samples
        or pd.to_datetime(pd.Series(samples), format="ISO8601", errors="coerce").notna().all()
    ):
        return []
    found = []
    series = pd.Series(samples)
    for fmt in _DATE_FORMATS:
        parsed = pd.to_datetime(series, format=fmt, errors="coerce")
        if parsed.notna().any():
            found.append(fmt)
            series = series[parsed.isna()]
            if series.empty:
                break
    return found[:3]


def starter_mapping(table: SourceTable) -> str:
    """YAML text of a mapping guessed from the table's header and first chunk."""
    first = next(table.chunks(), pd.DataFrame(columns=table.columns))
    taken: set[str] = set()
    chosen: dict[str, str | None] = {}
    for part in ("id", "email", "external_id", "type", "occurred_at", "subject", "note"):
        chosen[part] = guess_column(table.columns, part, taken)
        if chosen[part]:
            taken.add(chosen[part] or "")
    lines = [
        f"# A starter mapping for {table.path.name}, guessed by `givebutter-import init`.",
        f"# Check every line, then: givebutter-import check --mapping THIS_FILE {table.path.name}",
        f"# Columns in the file: {', '.join(table.columns)}",
        "",
        *_source_lines(table),
        *_contact_lines(chosen),
        "",
        "activity:",
        *_type_lines(chosen["type"], first),
        *_field_lines("subject", chosen["subject"], truncate=True),
        *_field_lines("note", chosen["note"]),
        *_date_lines(chosen["occurred_at"], first),
        "  # timezone: {value: America/New_York}   # optional: the activity's timezone field",
        "",
        "# skip:          # rows to leave out on purpose, reported as skipped",
        "#   - {column: Status, equals: Cancelled}",
    ]
    return "\n".join(lines) + "\n"


def _q(value: str) -> str:
    """A YAML scalar for value, quoted only when needed."""
    return yaml.safe_dump(value, default_style=None, width=1000).strip().removesuffix("\n...")


def _source_lines(table: SourceTable) -> list[str]:
    if table.format == "csv":
        return [
            "source:",
            f"  encoding: {table.encoding}",
            f"  delimiter: {_q(table.delimiter or ',')}",
            "",
        ]
    return ["source:", f"  sheet: {_q(table.sheet or '')}", ""]


def _contact_lines(chosen: dict[str, str | None]) -> list[str]:
    keys = [(k, chosen[k]) for k in ("id", "email", "external_id") if chosen[k]]
    if not keys:
        return ["contact:", "  id: CHANGE ME   # the column holding Givebutter contact ids"]
    lines = ["contact:   # tried in order: id, then email, then external_id"]
    return lines + [f"  {kind}: {_q(column or '')}" for kind, column in keys]


def _type_lines(column: str | None, first: pd.DataFrame) -> list[str]:
    if column is None:
        return ["  type: {value: note}   # no column looked like an activity type"]
    distinct: dict[str, str] = {}
    for value in first[column].tolist():
        if value.strip():
            distinct.setdefault(normalize_key(value), value.strip())
    values = sorted(distinct.values())[:50]
    lines = [
        "  type:",
        f"    column: {_q(column)}",
        "    map:   # the file's values → Givebutter's types",
    ]
    for value in values:
        guess = guess_type(value)
        if guess is not None and guess.value == value:
            continue
        target = guess.value if guess else "note   # CHANGE ME: no guess"
        lines.append(f"      {_q(value)}: {target}")
    lines.append("    default: note   # when the cell is blank")
    return lines


def _field_lines(name: str, column: str | None, *, truncate: bool = False) -> list[str]:
    if column is None:
        return [f"  # {name}: COLUMN"]
    lines = [f"  {name}:", f"    column: {_q(column)}"]
    if truncate:
        lines.append("    truncate: 255   # longer values are cut, and the results say so")
    return lines


def _date_lines(column: str | None, first: pd.DataFrame) -> list[str]:
    if column is None:
        return ["  # occurred_at: {column: Date, formats: ['%m/%d/%Y'], timezone: UTC}"]
    formats = guess_date_formats([v.strip() for v in first[column].head(500).tolist()])
    lines = ["  occurred_at:", f"    column: {_q(column)}"]
    if formats:
        lines.append("    formats: [" + ", ".join(_q(f) for f in formats) + "]   # guessed")
    lines.append("    timezone: UTC   # CHANGE ME: where the times in the file were written")
    return lines

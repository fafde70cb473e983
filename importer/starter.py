"""`givebutter-import init`: a starter mapping guessed from an export's header and first rows.

The guess is a first draft to edit, never a silent decision. Each column is placed by its
name (the table of other CRMs' column names in `importer.vocabulary`, in five languages)
and by its cells (emails, dates, activity-type words), and each guess says how sure it is:

- high: a known name, and the cells agree;
- medium: a known name the cells do not confirm, or cells alone that leave little doubt;
- low: a weak hint; check it first.

Columns it could not place are listed in the mapping's head, not dropped. The type
column's values each get a guessed Givebutter type (`Anruf` → phone_call), and the date
column its formats (day first or month first, from the cells, else from the language of
the header). `givebutter-import check` validates the result against the file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import yaml

from importer.layout import Layout
from importer.mapping import normalize_key
from importer.payload import CONTACT_ID_PATTERN, ActivityType
from importer.read import READ_ERROR_COLUMN, SourceTable
from importer.vocabulary import (
    CANCELLED_WORDS,
    COLUMN_NAMES,
    DAY_FIRST_LANGUAGES,
    LANGUAGE_NAMES,
    LANGUAGE_ZONES,
    TYPE_WORDS,
    normalize,
)

PARTS = ("id", "email", "external_id", "type", "occurred_at", "created_at", "subject", "note")
_RANK = {"high": 0, "medium": 1, "low": 2}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Guess:
    """A column placed in a part of the mapping, with how sure and why."""

    column: str
    confidence: str  # high, medium or low
    why: str

    def comment(self) -> str:
        return f"# {self.confidence}: {self.why}"


@dataclass
class Guesses:
    """Every part's column, the export's language, and the columns left over."""

    parts: dict[str, Guess] = field(default_factory=dict)
    language: str = "en"
    unplaced: list[str] = field(default_factory=list)


# -- columns ---------------------------------------------------------------------------------


def guess_columns(columns: list[str], sample: pd.DataFrame) -> Guesses:
    """Place the columns: by name (exact, then as whole words), then by their cells."""
    language = _language(columns)
    candidates: dict[str, list[tuple[int, int, Guess]]] = {part: [] for part in PARTS}
    for position, column in enumerate(columns):
        cells = _filled(sample, column)
        for part, order, exact, lang in _name_matches(column):
            if part not in candidates:  # a status: only ever suggested as a skip rule
                continue
            guess = _judge(part, column, cells, exact=exact, lang=lang)
            if guess is not None:
                candidates[part].append((_RANK[guess.confidence], order * 100 + position, guess))
        for part, guess in _by_cells(column, cells):
            candidates[part].append((_RANK[guess.confidence], 10_000 + position, guess))
    found = Guesses(language=language)
    taken: set[str] = set()
    for part in PARTS:
        for _, _, guess in sorted(candidates[part], key=lambda c: (c[0], c[1])):
            if guess.column not in taken:
                found.parts[part] = guess
                taken.add(guess.column)
                break
    found.unplaced = [c for c in columns if c not in taken]
    return found


def _name_matches(column: str) -> list[tuple[str, int, bool, str]]:
    """(part, order in the table, exact?, language) for each table name fitting `column`."""
    name = normalize(column)
    words = f" {name} "
    matches = []
    for order, (part, lang, names) in enumerate(COLUMN_NAMES):
        if name in names:
            matches.append((part, order, True, lang))
        elif any(len(known) > 3 and f" {known} " in words for known in names):
            matches.append((part, order, False, lang))
    return matches


def _judge(part: str, column: str, cells: list[str], *, exact: bool, lang: str) -> Guess | None:
    """A name match checked against the cells; None where the cells rule it out."""
    known = f"'{column}' is a usual name for {_PART_WORDS[part]}"
    if lang not in ("en", "any"):
        known = f"'{column}' is {LANGUAGE_NAMES[lang]} for {_PART_WORDS[part]}"
    if not exact:
        known = f"'{column}' contains a usual name for {_PART_WORDS[part]}"
    level = "high" if exact else "medium"
    if part == "id":
        if cells and _share(cells, CONTACT_ID_PATTERN.fullmatch) < 0.9:
            return None  # not Givebutter ids: an external id, perhaps
        return Guess(column, level, known)
    if part == "email":
        if cells and _share(cells, _is_email) < 0.8:
            return None
        return Guess(column, level, known)
    if part == "type":
        score = _share(cells, lambda c: guess_type(c) is not None)
        if cells and score < 0.3:
            return Guess(column, "low", f"{known}, but few of its values are activity types")
        return Guess(column, level if score >= 0.8 else "medium", known)
    if part in ("occurred_at", "created_at"):
        if cells and _share(cells, None, dates=True) < 0.8:
            return None
        return Guess(column, level, known)
    return Guess(column, level, known)


def _by_cells(column: str, cells: list[str]) -> list[tuple[str, Guess]]:
    """Parts a column's cells alone suggest, whatever its name."""
    if len(cells) < 3:
        return []
    found = []
    if _share(cells, _is_email) >= 0.9:
        found.append(("email", Guess(column, "medium", "its cells are email addresses")))
    distinct = {normalize_key(c) for c in cells}
    if len(distinct) <= 30 and _share(cells, lambda c: guess_type(c) is not None) >= 0.8:
        found.append(("type", Guess(column, "medium", "its cells are kinds of activity")))
    if _share(cells, None, dates=True) >= 0.9:
        found.append(("occurred_at", Guess(column, "low", "its cells are dates")))
    return found


_PART_WORDS = {
    "id": "a Givebutter contact id",
    "email": "an email address",
    "external_id": "the old system's contact id",
    "type": "the kind of activity",
    "occurred_at": "the activity's date",
    "created_at": "the date a record was created",
    "subject": "a subject",
    "note": "a note",
    "status": "a status",
}


def _language(columns: list[str]) -> str:
    """The language most header names are in, by names that belong to one language only."""
    langs_of: dict[str, set[str]] = {}
    for _, lang, names in COLUMN_NAMES:
        for name in names:
            langs_of.setdefault(name, set()).add(lang)
    votes = Counter(
        next(iter(langs))
        for column in columns
        if len(langs := langs_of.get(normalize(column), set())) == 1 and "any" not in langs
    )
    return votes.most_common(1)[0][0] if votes else "en"


def _filled(sample: pd.DataFrame, column: str) -> list[str]:
    if column not in sample:
        return []
    return [c for c in (str(v).strip() for v in sample[column].tolist()) if c]


def _share(cells: list[str], test: object, *, dates: bool = False) -> float:
    if not cells:
        return 0.0
    if dates:  # a number alone ("3185") reads as a year in ISO 8601, but is not a date
        worded = [c for c in cells if not c.isdigit()]
        if not worded:
            return 0.0
        read = _readable_dates(worded, guess_date_formats(worded)[0]).sum()
        return float(read) / len(cells)
    assert callable(test)
    return sum(1 for c in cells if test(c)) / len(cells)


def _is_email(cell: str) -> bool:
    return bool(_EMAIL.match(cell))


# -- activity types --------------------------------------------------------------------------

_WHOLE: dict[str, ActivityType] = {}
_WORDS: list[tuple[str, ActivityType]] = []
for _kind, _words in TYPE_WORDS.items():
    for _word in _words:
        _WHOLE.setdefault(_word, _kind)
        _WORDS.append((_word, _kind))


def guess_type(value: str) -> ActivityType | None:
    """The Givebutter type a value from an export means (`Anruf` → phone_call), or None:
    the value whole, else the word it contains that comes first (the longest, among
    words starting there: `E-Mail versendet` is an email, `Task/Other` a task)."""
    name = normalize(value)
    if name.replace(" ", "_") in {t.value for t in ActivityType}:
        return ActivityType(name.replace(" ", "_"))
    if name in _WHOLE:
        return _WHOLE[name]
    words = f" {name} "
    found = [(words.find(f" {w} "), -len(w), kind) for w, kind in _WORDS if f" {w} " in words]
    return min(found)[2] if found else None


def type_confidence(value: str) -> str:
    name = normalize(value)
    return "high" if name in _WHOLE or name.replace(" ", "_") in set(ActivityType) else "medium"


# -- dates -----------------------------------------------------------------------------------

_MONTH_FIRST = [
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%m/%d/%y %I:%M %p",
    "%m/%d/%y %H:%M",
    "%m/%d/%y",
    "%m-%d-%Y",
]
_DAY_FIRST = [
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y",
    "%d.%m.%y",
    "%d/%m/%y",
]
_EITHER = ["%Y/%m/%d %H:%M", "%Y/%m/%d", "%b %d, %Y", "%d %b %Y", "%B %d, %Y", "%d %B %Y"]
_NUMERIC_DATE = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b")
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}")


def guess_date_formats(
    cells: list[str], *, day_first: bool | None = None
) -> tuple[list[str], bool]:
    """Formats that read the cells (none where ISO 8601 reads them all), at most three, and
    whether every cell is a bare date. Day or month first: from a cell that can only be
    read one way (`13/05/2024`), else `day_first`, else month first."""
    cells = [c for c in cells if c]
    bare = bool(cells) and not any(_TIME_OF_DAY.search(c) for c in cells)
    if not cells or _readable_dates(cells, []).all():
        return [], bare
    # Cells that only one order can read vote for it (a stray bad cell is outvoted).
    day_votes = month_votes = 0
    for cell in cells:
        if m := _NUMERIC_DATE.match(cell):
            day_votes += int(m.group(1)) > 12
            month_votes += int(m.group(2)) > 12
    if day_votes != month_votes:
        day_first = day_votes > month_votes
    order = (_DAY_FIRST if day_first else _MONTH_FIRST) + _EITHER
    found: list[str] = []
    left = pd.Series(cells)
    for fmt in order:
        parsed = pd.to_datetime(left, format=fmt, errors="coerce")
        if parsed.notna().any():
            found.append(fmt)
            left = left[parsed.isna()]
            if left.empty:
                break
    return found[:3], bare


def _readable_dates(cells: list[str], formats: list[str]) -> pd.Series:
    """Which cells the mapper would read as dates: each format in turn, then ISO 8601."""
    series = pd.Series(cells, dtype=object)
    result = pd.Series(False, index=series.index)
    for fmt in [*formats, "ISO8601"]:
        todo = ~result
        if not todo.any():
            break
        try:
            read = pd.to_datetime(series[todo], format=fmt, errors="coerce", utc=True)
        except (ValueError, OverflowError):  # years pandas cannot hold: not this format
            continue
        result[todo] = read.notna()
    return result


# -- the mapping -----------------------------------------------------------------------------


def starter_mapping(table: SourceTable, layout: Layout | None = None) -> str:
    """YAML text of a mapping guessed from the table's header and first chunk."""
    first = next(table.chunks(), pd.DataFrame(columns=table.columns)).drop(
        columns=[READ_ERROR_COLUMN], errors="ignore"
    )
    found = guess_columns(table.columns, first)
    parts = found.parts
    lines = [
        f"# A starter mapping for {table.path.name}, guessed by `givebutter-import init`.",
        "# Each guess says how sure it is (high, medium, low); check the others first, then:",
        f"#   givebutter-import check --mapping THIS_FILE {table.path.name}",
        *_layout_lines(layout),
        f"# Header language: {LANGUAGE_NAMES[found.language]}.",
        "# Columns not used: " + (", ".join(found.unplaced) or "none"),
        "",
        *_source_lines(table),
        *_contact_lines(parts),
        "",
        "activity:",
        *_type_lines(parts.get("type"), first),
        *_field_lines("subject", parts.get("subject"), truncate=True),
        *_field_lines("note", parts.get("note")),
        *_date_lines(parts.get("occurred_at"), parts.get("created_at"), first, found.language),
        "  # timezone: {value: America/New_York}   # optional: the activity's timezone field",
        "",
        *_skip_lines(found.unplaced, first),
    ]
    return "\n".join(lines) + "\n"


def _q(value: str) -> str:
    """A YAML scalar for value, quoted only when needed."""
    text = yaml.safe_dump(value, default_style=None, width=1000, allow_unicode=True)
    return text.strip().removesuffix("\n...")


def _layout_lines(layout: Layout | None) -> list[str]:
    return [f"# Read: {layout.describe()}."] if layout is not None and layout.chosen else []


def _source_lines(table: SourceTable) -> list[str]:
    if table.format == "csv":
        lines = ["source:", f"  encoding: {table.encoding}"]
        lines.append(f"  delimiter: {_q(table.delimiter or ',')}")
    else:
        lines = ["source:", f"  sheet: {_q(table.sheet or '')}"]
    if table.header_row != 1:
        lines.append(f"  header_row: {table.header_row}")
    return [*lines, ""]


def _contact_lines(parts: dict[str, Guess]) -> list[str]:
    keys = [(kind, parts[kind]) for kind in ("id", "email", "external_id") if kind in parts]
    if not keys:
        return ["contact:", "  id: CHANGE ME   # the column holding Givebutter contact ids"]
    lines = ["contact:   # tried in order: id, then email, then external_id"]
    return lines + [f"  {kind}: {_q(g.column)}   {g.comment()}" for kind, g in keys]


def _type_lines(guess: Guess | None, first: pd.DataFrame) -> list[str]:
    if guess is None:
        return ["  type: {value: note}   # CHANGE ME: no column looked like an activity type"]
    distinct: dict[str, str] = {}
    for value in first[guess.column].tolist():
        if str(value).strip():
            distinct.setdefault(normalize_key(str(value)), str(value).strip())
    lines = [
        "  type:",
        f"    column: {_q(guess.column)}   {guess.comment()}",
        "    map:   # the file's values → Givebutter's types",
    ]
    for value in sorted(distinct.values(), key=str.casefold)[:100]:
        kind = guess_type(value)
        if kind is None:
            lines.append(f"      {_q(value)}: note   # CHANGE ME: no guess")
        else:
            lines.append(f"      {_q(value)}: {kind.value}   # {type_confidence(value)}")
    lines.append("    else: invalid   # a value not listed above makes its row invalid")
    lines.append("    default: note   # when the cell is blank")
    return lines


def _field_lines(name: str, guess: Guess | None, *, truncate: bool = False) -> list[str]:
    if guess is None:
        return [f"  # {name}: COLUMN"]
    lines = [f"  {name}:", f"    column: {_q(guess.column)}   {guess.comment()}"]
    if truncate:
        lines.append("    truncate: 255   # longer values are cut, and the results say so")
    return lines


def _date_lines(
    guess: Guess | None, created: Guess | None, first: pd.DataFrame, language: str
) -> list[str]:
    if guess is None and created is None:
        return ["  # occurred_at: {column: Date, formats: ['%m/%d/%Y'], timezone: UTC}"]
    columns = [g for g in (guess, created) if g is not None]
    cells = [c for g in columns for c in _filled(first.head(1000), g.column)]
    formats, bare = guess_date_formats(cells, day_first=language in DAY_FIRST_LANGUAGES)
    lines = ["  occurred_at:"]
    if len(columns) == 2:
        names = ", ".join(_q(g.column) for g in columns)
        lines.append(f"    column: [{names}]   # the first that is not blank")
        lines += [f"    {g.comment()} ('{g.column}')" for g in columns]
    else:
        lines.append(f"    column: {_q(columns[0].column)}   {columns[0].comment()}")
    if formats:
        lines.append("    formats: [" + ", ".join(_q(f) for f in formats) + "]   # from the cells")
    if bare:
        lines.append("    date_only: true   # every cell is a date without a time: sent as noon")
    zone, sure = LANGUAGE_ZONES.get(language, ("UTC", ""))
    if sure:
        said = f"{sure}: a {LANGUAGE_NAMES[language]} export; CHANGE ME if written elsewhere"
        lines.append(f"    timezone: {zone}   # {said}")
    else:
        lines.append("    timezone: UTC   # CHANGE ME: where the times in the file were written")
    return lines


def _skip_lines(unplaced: list[str], first: pd.DataFrame) -> list[str]:
    """A commented skip rule for a status column that marks rows as cancelled."""
    for column in unplaced:
        if not any(
            normalize(column) in names for part, _, names in COLUMN_NAMES if part == "status"
        ):
            continue
        values = {str(v).strip() for v in first[column].tolist()}
        cancelled = sorted(v for v in values if normalize(v) in CANCELLED_WORDS)
        if cancelled:
            listed = ", ".join(_q(v) for v in cancelled)
            return [
                f"# skip:   # '{column}' marks rows that did not happen: leave them out?",
                f"#   - {{column: {_q(column)}, in: [{listed}]}}",
            ]
    return [
        "# skip:          # rows to leave out on purpose, reported as skipped",
        "#   - {column: Status, equals: Cancelled}",
    ]

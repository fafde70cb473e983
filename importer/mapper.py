"""The map stage: a chunk of source rows in, its payload fields and problems out. No I/O.

`Mapper(mapping).map_columns(frame)` works a column at a time with pyarrow compute
functions (trimming, templates, value maps, defaults, truncation, dates, skip rules) and
gives a `MappedChunk`; nothing is done row by row. Each field's distinct values are then
validated by `importer.payload`: the mapper decides what the values are, the payload model
alone decides whether they are acceptable. `map_chunk(frame)` gives the same rows one by
one, as `MappedRow`s with their payloads.

The frame is what the reader hands on: text cells ("" for blank), indexed by spreadsheet
row number, with an optional `__read_error__` column naming a row the reader found broken.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.dates import FIRST_INSTANT, LAST_INSTANT, iso_text, read_occurred_at
from importer.mapping import (
    ELSE_INVALID,
    FieldSpec,
    Mapping,
    check_timezone_name,
    normalize_key,
    template_parts,
)
from importer.payload import CONTACT_ID_PATTERN, FIELD_NAMES, refused_values
from importer.read import READ_ERROR_COLUMN
from importer.records import MappedChunk, MappedRow

# What `str.strip()` strips: every character for which `str.isspace()` holds (none lies
# above U+3000).
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_TEMPLATE_EDGE = " \t:;,-|/"


@dataclass(frozen=True, slots=True)
class _Column:
    """One payload field's values for a chunk, with the rows that need a word in the report."""

    values: pa.Array  # text; "" means blank
    truncated: dict[int, int] | None = None  # position -> original length, where cut
    errors: dict[int, str] | None = None  # position -> reason (a value `else: invalid` refused)


class Mapper:
    """Applies one mapping to chunks of rows. Build once per run; `map_columns` is pure."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._fields = mapping.activity.fields()
        self._maps = {
            name: {normalize_key(k): v for k, v in spec.map.items()}
            for name, spec in self._fields.items()
            if spec.map
        }
        self._send_null = frozenset(n for n, spec in self._fields.items() if spec.send_null)
        occurred = self._fields.get("occurred_at")
        self._zone_name = (occurred and occurred.timezone) or "UTC"
        self._zone = zoneinfo.ZoneInfo(self._zone_name)

    def map_chunk(self, frame: pd.DataFrame) -> list[MappedRow]:
        """The chunk's rows one by one, each with its payload or its reasons."""
        return self.map_columns(frame).mapped_rows()

    def map_columns(self, frame: pd.DataFrame) -> MappedChunk:
        """The chunk mapped and validated column by column: no per-row objects."""
        n = len(frame)
        trimmed = {col: _trim(_text(frame[col])) for col in self.mapping.columns()}
        contacts, contact_errors = self._contacts(trimmed, n)
        skipped = self._skip_reasons(trimmed, n)
        problems = _Problems(skipped)
        keys = self._keys(trimmed, problems) if self.mapping.key else None
        if READ_ERROR_COLUMN in frame:
            read_errors = frame[READ_ERROR_COLUMN].to_numpy()
            problems.errors_at(
                {int(at): read_errors[at] for at in np.flatnonzero(read_errors != "")}
            )
        problems.errors_at(contact_errors)
        values: dict[str, pa.Array] = {}
        for name, spec in self._fields.items():
            column = self._field(name, spec, trimmed, n)
            problems.errors_at(column.errors or {})
            if name == "occurred_at":
                values[name], date_errors, days = self._occurred_at(column.values)
                problems.errors_at(date_errors)
                if "timezone" not in self._fields and days.any():
                    # A calendar day is sent as noon in the mapping's timezone: say which.
                    values["timezone"] = pc.if_else(pa.array(days), self._zone_name, "")
            else:
                values[name] = column.values
            for pos, length in (column.truncated or {}).items():
                problems.warn(pos, f"{name} truncated from {length} to {spec.truncate} characters")
        blank_type = "type is blank and the mapping gives no default"
        if "type" not in values:
            problems.errors_at(dict.fromkeys(range(n), blank_type))
        else:
            problems.errors_at(dict.fromkeys(_positions(pc.equal(values["type"], "")), blank_type))
        if "timezone" in values:
            problems.errors_at(_timezone_name_errors(values["timezone"]))
        for name in FIELD_NAMES:
            if name in values:
                problems.errors_at(_check_filled(name, values[name]))
        return MappedChunk(
            rows=frame.index.to_list(),
            contacts=contacts,
            values=values,
            send_null=self._send_null,
            skipped=skipped,
            errors=problems.errors,
            warnings=problems.warnings,
            keys=keys,
            new_contacts=self._new_contacts(trimmed),
        )

    # -- per field, vectorised ------------------------------------------------------------

    def _field(self, name: str, spec: FieldSpec, trimmed: dict[str, pa.Array], n: int) -> _Column:
        values = _source_values(spec, trimmed, n)
        errors = None
        lookup = self._maps.get(name)
        if lookup:
            values, errors = _apply_map(name, spec, values, lookup)
        if spec.default is not None:
            values = pc.if_else(pc.equal(values, ""), spec.default, values)
        if spec.truncate is None:
            return _Column(values, errors=errors)
        lengths = pc.utf8_length(values)
        too_long = pc.greater(lengths, spec.truncate)
        where = _positions(too_long)
        if not where.size:
            return _Column(values, errors=errors)
        cut = pc.if_else(too_long, pc.utf8_slice_codeunits(values, 0, spec.truncate), values)
        lengths_cut = dict(zip(where.tolist(), lengths.take(where).to_pylist(), strict=True))
        return _Column(cut, lengths_cut, errors)

    def _occurred_at(self, text: pa.Array) -> tuple[pa.Array, dict[int, str], np.ndarray]:
        """Parse dates with the mapping's formats, then ISO 8601; give them in ISO 8601, UTC,
        with the reasons for cells that are not dates and the mask of calendar days."""
        filled = _positions(pc.not_equal(text, ""))
        spec = self._fields["occurred_at"]
        formats = spec.formats or []
        instants = np.full(len(text), np.datetime64("NaT", "us"))
        days = np.zeros(len(text), dtype=bool)
        instants[filled], days[filled] = read_occurred_at(
            text.take(filled), formats, self._zone, date_only=spec.date_only
        )
        errors = {}
        tried = " or ".join([*(f"'{f}'" for f in formats), "ISO 8601"])
        unread = filled[np.isnat(instants[filled])]
        for pos, cell in zip(unread.tolist(), text.take(unread).to_pylist(), strict=True):
            errors[pos] = f"occurred_at ('{cell}') does not match {tried}"
        # pandas holds years Python's datetime cannot ("-5" reads as the year -5 in ISO 8601).
        outside = ~np.isnat(instants) & ((instants < FIRST_INSTANT) | (instants > LAST_INSTANT))
        where = np.flatnonzero(outside)
        for pos, cell in zip(where.tolist(), text.take(where).to_pylist(), strict=True):
            errors[pos] = f"occurred_at ('{cell}') is outside the years 1 to 9999 (in UTC)"
        instants[outside] = np.datetime64("NaT", "us")
        days &= ~np.isnat(instants)
        return iso_text(instants), errors, days

    # -- contact and skip rules, vectorised ----------------------------------------------

    def _contacts(self, trimmed: dict[str, pa.Array], n: int) -> tuple[pa.Array, dict[int, str]]:
        """The contact key each row will be resolved by, as `kind:value` for non-ids."""
        keys = _constant("", n)
        for kind, column in reversed(self.mapping.contact.lookups()):
            values = trimmed[column]
            keyed = values if kind == "id" else pc.binary_join_element_wise(f"{kind}:", values, "")
            keys = pc.if_else(pc.not_equal(values, ""), keyed, keys)
        tried = ", ".join(col for _, col in self.mapping.contact.lookups())
        blank = {"": f"contact: {tried} {'is' if ',' not in tried else 'are'} blank"}
        reasons = _reasons_by_value(keys, blank)
        if self.mapping.contact.id is not None:
            # Checked in the id column itself (the first key tried), so that an id cell
            # is never taken for a `kind:value` key.
            ids = trimmed[self.mapping.contact.id]
            bad = {
                key: f"contact id ('{key}') is not a Givebutter contact id (a number)"
                for key in pc.unique(ids).to_pylist()
                if key and not CONTACT_ID_PATTERN.fullmatch(key)
            }
            reasons.update(_reasons_by_value(ids, bad))
        return keys, reasons

    def source_keys(self, frame: pd.DataFrame) -> list[str]:
        """The non-blank source keys of a chunk's rows (`key:`), without mapping the rest."""
        trimmed = {col: _trim(_text(frame[col])) for col in self.mapping.key}
        keys = self._keys(trimmed, _Problems([""] * len(frame)))
        return [key for key in keys.to_pylist() if key]

    def _keys(self, trimmed: dict[str, pa.Array], problems: _Problems) -> pa.Array:
        """Each row's source key: its key column, or its key columns joined by " | "; a row
        with a blank part has none (and is invalid)."""
        parts = [trimmed[column] for column in self.mapping.key]
        blank = pc.equal(parts[0], "")
        for part in parts[1:]:
            blank = pc.or_(blank, pc.equal(part, ""))
        named = " + ".join(self.mapping.key)
        problems.errors_at(dict.fromkeys(_positions(blank).tolist(), f"key ({named}) is blank"))
        keys = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, " | ")
        return pc.if_else(blank, "", keys)

    def _new_contacts(self, trimmed: dict[str, pa.Array]) -> dict[str, pa.Array] | None:
        """The columns to create a missing contact from, if the mapping says how."""
        create = self.mapping.contact.create
        if create is None:
            return None
        return {name: trimmed[column] for name, column in create.columns().items()}

    def _skip_reasons(self, trimmed: dict[str, pa.Array], n: int) -> list[str]:
        reasons = [""] * n
        undecided = np.ones(n, dtype=bool)
        for number, rule in enumerate(self.mapping.skip, start=1):
            norm = _translate(trimmed[rule.column], normalize_key)
            if rule.equals is not None:
                hit = pc.equal(norm, normalize_key(rule.equals))
            elif rule.in_ is not None:
                wanted = pa.array([normalize_key(v) for v in rule.in_], pa.string())
                hit = pc.is_in(norm, value_set=wanted)
            elif rule.contains is not None:
                hit = pc.match_substring(norm, normalize_key(rule.contains))
            else:
                hit = pc.equal(pc.equal(norm, ""), bool(rule.blank))
            matched = hit.to_numpy(zero_copy_only=False) & undecided
            for pos in np.flatnonzero(matched):
                reasons[pos] = f"skip rule {number}: {rule.describe()}"
            undecided &= ~matched
        return reasons


class _Problems:
    """A chunk's errors and warnings by position, leaving out the rows a skip rule took."""

    def __init__(self, skipped: list[str]) -> None:
        self._skipped = skipped
        self.errors: dict[int, list[str]] = {}
        self.warnings: dict[int, list[str]] = {}

    def warn(self, pos: int, warning: str) -> None:
        if not self._skipped[pos]:
            self.warnings.setdefault(int(pos), []).append(warning)

    def errors_at(self, reasons: dict[int, str]) -> None:
        for pos, reason in reasons.items():
            if not self._skipped[pos]:
                self.errors.setdefault(int(pos), []).append(reason)


def _check_filled(name: str, values: pa.Array) -> dict[int, str]:
    """The payload model's word on a field's non-blank values, by position."""
    distinct = [value for value in pc.unique(values).to_pylist() if value != ""]
    return _reasons_by_value(values, refused_values(name, distinct))


def _timezone_name_errors(names: pa.Array) -> dict[int, str]:
    bad: dict[str, str] = {}
    for name in pc.unique(names).to_pylist():
        if name:
            try:
                check_timezone_name(name)
            except ValueError as error:
                bad[name] = f"timezone: {error}"
    return _reasons_by_value(names, bad)


def _reasons_by_value(values: pa.Array, reasons: dict[str, str]) -> dict[int, str]:
    """Each position whose value has a reason, with that reason."""
    if not reasons:
        return {}
    where = _positions(pc.is_in(values, value_set=pa.array(list(reasons), pa.string())))
    found = values.take(where).to_pylist()
    return {pos: reasons[value] for pos, value in zip(where.tolist(), found, strict=True)}


def _positions(mask: pa.Array) -> np.ndarray:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def _text(cells: pd.Series) -> pa.Array:
    if isinstance(cells.dtype, pd.ArrowDtype):  # read by arrow: its own array, not copied
        arrow = pa.array(cells.array)
        if isinstance(arrow, pa.ChunkedArray):
            arrow = arrow.combine_chunks()
        return arrow.cast(pa.string())
    return pa.array(cells.to_numpy(), pa.string())


def _trim(cells: pa.Array) -> pa.Array:
    return pc.utf8_trim(cells, characters=_WHITESPACE)


def _constant(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _translate(values: pa.Array, translate: Callable[[str], str]) -> pa.Array:
    """`translate` applied to each distinct value once."""
    encoded = pc.dictionary_encode(values)
    dictionary = [translate(value) for value in encoded.dictionary.to_pylist()]
    return pa.array(dictionary, pa.string()).take(encoded.indices)


def _apply_map(
    name: str, spec: FieldSpec, values: pa.Array, lookup: dict[str, str]
) -> tuple[pa.Array, dict[int, str] | None]:
    """`map`, then `else` for the values it does not list (blanks are left to `default`);
    each distinct value is looked up once."""
    otherwise = spec.else_value()
    unlisted: list[str] = []

    def translate(cell: str) -> str:
        found = lookup.get(normalize_key(cell))
        if found is not None or cell == "":
            return cell if found is None else found
        unlisted.append(cell)
        return cell if otherwise is None else otherwise

    mapped = _translate(values, translate)
    if spec.else_ != ELSE_INVALID or not unlisted:
        return mapped, None
    reasons = {
        cell: f"{name} ('{cell}') is not one of the map's keys (else: invalid)" for cell in unlisted
    }
    return mapped, _reasons_by_value(values, reasons)


def _first_filled(columns: list[str], trimmed: dict[str, pa.Array]) -> pa.Array:
    """Each row's first non-blank cell among `columns`, in order ("" where all are blank)."""
    values = trimmed[columns[-1]]
    for column in reversed(columns[:-1]):
        values = pc.if_else(pc.not_equal(trimmed[column], ""), trimmed[column], values)
    return values


def _source_values(spec: FieldSpec, trimmed: dict[str, pa.Array], n: int) -> pa.Array:
    if isinstance(spec.column, list):
        return _first_filled(spec.column, trimmed)
    if spec.column is not None:
        return trimmed[spec.column]
    if spec.value is not None:
        return _constant(spec.value, n)
    columns = [column for _, column in template_parts(spec.template or "") if column is not None]
    if not columns:
        return _constant("", n)
    pieces: list[pa.Array | str] = []
    for literal, column in template_parts(spec.template or ""):
        pieces.append(literal)
        if column is not None:
            pieces.append(trimmed[column])
    built = pc.binary_join_element_wise(*pieces, "")
    all_blank = functools.reduce(pc.and_, [pc.equal(trimmed[c], "") for c in columns])
    # Where some columns are blank, the separators around them are dropped ("{A}: {B}" with
    # A blank gives "B", not ": B"); where all are blank the value is blank, so that
    # `default` applies.
    return pc.if_else(all_blank, "", pc.utf8_trim(built, characters=_TEMPLATE_EDGE))

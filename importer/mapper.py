"""The map stage: a chunk of source rows in, one `MappedRow` per row out. No I/O.

`Mapper(mapping).map_chunk(frame)` works column-wise with vectorised pandas operations
(trimming, templates, value maps, defaults, truncation, date parsing, skip rules) and only
then assembles one payload per row, which `importer.payload` validates: the mapper decides
what the values are, the payload model alone decides whether they are acceptable.

The frame is what the reader hands on: text cells ("" for blank), indexed by spreadsheet
row number, with an optional `__read_error__` column naming a row the reader found broken.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from importer.mapping import (
    FieldSpec,
    Mapping,
    check_timezone_name,
    normalize_key,
    template_parts,
)
from importer.payload import CONTACT_ID_PATTERN, validate_payload
from importer.read import READ_ERROR_COLUMN
from importer.records import MappedRow

# A date-time string that carries its own offset: a time of day, then Z, +hh:mm, +hhmm or
# +hh. (Not a bare date: the "-05" that ends "2024-03-05" is its day, not an offset.)
_HAS_OFFSET = r"[T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_OFFSET_DIRECTIVE = re.compile(r"%[zZ]")
_FIRST_INSTANT = pd.Timestamp("0001-01-01T00:00:00", tz="UTC")
_LAST_INSTANT = pd.Timestamp("9999-12-31T23:59:59.999999", tz="UTC")
_TEMPLATE_EDGE = " \t:;,-|/"


@dataclass(frozen=True, slots=True)
class _Column:
    """One payload field's values for a chunk, with the rows that need a word in the report."""

    values: pd.Series  # str; "" means blank
    truncated_from: pd.Series | None = None  # original length where cut, else 0


class Mapper:
    """Applies one mapping to chunks of rows. Build once per run; `map_chunk` is pure."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._fields = mapping.activity.fields()
        self._maps = {
            name: {normalize_key(k): v for k, v in spec.map.items()}
            for name, spec in self._fields.items()
            if spec.map
        }
        occurred = self._fields.get("occurred_at")
        self._zone = zoneinfo.ZoneInfo((occurred and occurred.timezone) or "UTC")

    def map_chunk(self, frame: pd.DataFrame) -> list[MappedRow]:
        rows = frame.index.to_list()
        trimmed = {col: _trim(frame[col]) for col in self.mapping.columns()}
        contacts, contact_errors = self._contacts(trimmed, len(rows))
        skipped = self._skip_reasons(trimmed, len(rows))
        columns = {name: self._field(name, spec, trimmed) for name, spec in self._fields.items()}
        dates, date_errors = self._occurred_at(columns.pop("occurred_at", None))
        # Plain lists: reading a pandas Series cell by cell costs more than the rest together.
        cells = {
            name: (
                column.values.to_list(),
                None if column.truncated_from is None else column.truncated_from.to_list(),
            )
            for name, column in columns.items()
        }
        read_errors = (
            frame[READ_ERROR_COLUMN].to_list() if READ_ERROR_COLUMN in frame else [""] * len(rows)
        )
        return [
            self._row(
                i, row, contacts, contact_errors, skipped, cells, dates, date_errors, read_errors
            )
            for i, row in enumerate(rows)
        ]

    # -- per field, vectorised ------------------------------------------------------------

    def _field(self, name: str, spec: FieldSpec, trimmed: dict[str, pd.Series]) -> _Column:
        values = _source_values(spec, trimmed, len(next(iter(trimmed.values()), [])))
        lookup = self._maps.get(name)
        if lookup:
            values = _apply_map(values, lookup)
        if spec.default is not None:
            values = values.where(values != "", spec.default)
        if spec.truncate is None:
            return _Column(values)
        lengths = values.str.len()
        too_long = lengths > spec.truncate
        if not too_long.any():
            return _Column(values)
        return _Column(
            values.where(~too_long, values.str.slice(0, spec.truncate)),
            lengths.where(too_long, 0),
        )

    def _occurred_at(self, column: _Column | None) -> tuple[list[Any], list[str]]:
        """Parse dates with the mapping's formats, then ISO 8601; give UTC datetimes."""
        if column is None:
            return [], []
        text = column.values
        parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
        todo = text != ""
        spec = self._fields["occurred_at"]
        for fmt in spec.formats or []:
            if not todo.any():
                break
            found = _parse_with_format(text[todo], fmt, self._zone)
            parsed.loc[found.index] = found
            todo &= parsed.isna()
        if todo.any():
            found = _parse_iso(text[todo], self._zone)
            parsed.loc[found.index] = found
            todo &= parsed.isna()
        errors = [""] * len(text)
        if todo.any():
            tried = " or ".join([*(f"'{f}'" for f in spec.formats or []), "ISO 8601"])
            for pos in np.flatnonzero(todo.to_numpy()):
                errors[pos] = f"occurred_at ('{text.iat[pos]}') does not match {tried}"
        # pandas holds years Python's datetime cannot ("-5" reads as the year -5 in ISO 8601).
        outside = parsed.notna() & ~parsed.between(_FIRST_INSTANT, _LAST_INSTANT)
        for pos in np.flatnonzero(outside.to_numpy()):
            errors[pos] = f"occurred_at ('{text.iat[pos]}') is outside the years 1 to 9999 (in UTC)"
        values = [
            None if pd.isna(v) or out else v.to_pydatetime()
            for v, out in zip(parsed, outside, strict=True)
        ]
        return values, errors

    # -- contact and skip rules, vectorised ----------------------------------------------

    def _contacts(self, trimmed: dict[str, pd.Series], n: int) -> tuple[list[str], list[str]]:
        """The contact key each row will be resolved by, as `kind:value` for non-ids."""
        keys = pd.Series([""] * n, dtype=object)
        for kind, column in reversed(self.mapping.contact.lookups()):
            values = trimmed[column].reset_index(drop=True)
            present = values != ""
            keys = keys.where(~present, values if kind == "id" else f"{kind}:" + values)
        errors = [""] * n
        key_list = keys.to_list()
        bad_id = self.mapping.contact.id is not None
        for pos, key in enumerate(key_list):
            if key == "":
                tried = ", ".join(col for _, col in self.mapping.contact.lookups())
                errors[pos] = f"contact: {tried} {'is' if ',' not in tried else 'are'} blank"
            elif bad_id and ":" not in key and not CONTACT_ID_PATTERN.fullmatch(key):
                errors[pos] = f"contact id ('{key}') is not a Givebutter contact id (a number)"
        return key_list, errors

    def _skip_reasons(self, trimmed: dict[str, pd.Series], n: int) -> list[str | None]:
        reasons: list[str | None] = [None] * n
        undecided = np.ones(n, dtype=bool)
        for number, rule in enumerate(self.mapping.skip, start=1):
            norm = _normalized(trimmed[rule.column])
            if rule.equals is not None:
                hit = norm == normalize_key(rule.equals)
            elif rule.in_ is not None:
                hit = norm.isin([normalize_key(v) for v in rule.in_])
            elif rule.contains is not None:
                hit = norm.str.contains(normalize_key(rule.contains), regex=False)
            else:
                hit = (norm == "") == bool(rule.blank)
            matched = hit.to_numpy(dtype=bool) & undecided
            for pos in np.flatnonzero(matched):
                reasons[pos] = f"skip rule {number}: {rule.describe()}"
            undecided &= ~matched
        return reasons

    # -- one row ---------------------------------------------------------------------------

    def _row(
        self,
        i: int,
        row: int,
        contacts: list[str],
        contact_errors: list[str],
        skipped: list[str | None],
        cells: dict[str, tuple[list[str], list[int] | None]],
        dates: list[Any],
        date_errors: list[str],
        read_errors: list[str],
    ) -> MappedRow:
        mapped = MappedRow(row=row, contact=contacts[i])
        if skipped[i] is not None:
            mapped.skipped_by = skipped[i]
            return mapped
        fields: dict[str, Any] = {}
        for name, (values, truncated_from) in cells.items():
            value = values[i]
            if value != "":
                fields[name] = value
            elif self._fields[name].send_null:
                fields[name] = None
            if truncated_from is not None and truncated_from[i]:
                limit = self._fields[name].truncate
                mapped.warnings.append(
                    f"{name} truncated from {truncated_from[i]} to {limit} characters"
                )
        if dates and dates[i] is not None:
            fields["occurred_at"] = dates[i]
        elif "occurred_at" in self._fields and self._fields["occurred_at"].send_null:
            fields["occurred_at"] = None
        errors = [e for e in (read_errors[i], contact_errors[i]) if e]
        if dates and date_errors[i]:
            errors.append(date_errors[i])
        if "type" not in fields:
            errors.append("type is blank and the mapping gives no default")
        timezone = fields.get("timezone")
        if timezone:
            try:
                check_timezone_name(timezone)
            except ValueError as error:
                errors.append(f"timezone: {error}")
        payload, reasons = validate_payload(fields)
        errors.extend(r for r in reasons if not r.startswith("type is required"))
        if errors:
            mapped.errors = errors
        else:
            mapped.payload = payload
        return mapped


def _trim(series: pd.Series) -> pd.Series:
    return series.astype(object).str.strip()


def _normalized(series: pd.Series) -> pd.Series:
    uniques = series.unique()
    return series.map({u: normalize_key(u) for u in uniques})


def _source_values(spec: FieldSpec, trimmed: dict[str, pd.Series], n: int) -> pd.Series:
    if spec.column is not None:
        return trimmed[spec.column]
    index = next(iter(trimmed.values())).index if trimmed else pd.RangeIndex(n)
    if spec.value is not None:
        return pd.Series(spec.value, index=index, dtype=object)
    if spec.template is None:
        return pd.Series("", index=index, dtype=object)
    built = pd.Series("", index=index, dtype=object)
    all_blank = pd.Series(True, index=index)
    for literal, column in template_parts(spec.template):
        built = built + literal
        if column is not None:
            built = built + trimmed[column]
            all_blank &= trimmed[column] == ""
    # Where some columns are blank, the separators around them are dropped ("{A}: {B}" with
    # A blank gives "B", not ": B"); where all are blank the value is blank, so that
    # `default` applies.
    return built.str.strip(_TEMPLATE_EDGE).where(~all_blank, "")


def _apply_map(values: pd.Series, lookup: dict[str, str]) -> pd.Series:
    """Replace values found in `lookup` (compared case- and space-insensitively)."""
    translate = {u: lookup.get(normalize_key(u), u) for u in values.unique()}
    return values.map(translate)


def _parse_with_format(text: pd.Series, fmt: str, zone: zoneinfo.ZoneInfo) -> pd.Series:
    if _OFFSET_DIRECTIVE.search(fmt):
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    naive = pd.to_datetime(text, format=fmt, errors="coerce")
    return _localize(naive, zone)


def _parse_iso(text: pd.Series, zone: zoneinfo.ZoneInfo) -> pd.Series:
    with_offset = text.str.contains(_HAS_OFFSET, regex=True)
    aware = pd.to_datetime(text[with_offset], format="ISO8601", errors="coerce", utc=True)
    naive = pd.to_datetime(text[~with_offset], format="ISO8601", errors="coerce")
    parts = [p.astype("datetime64[us, UTC]") for p in (aware, _localize(naive, zone)) if len(p)]
    return pd.concat(parts).reindex(text.index) if parts else aware.astype("datetime64[us, UTC]")


def _localize(naive: pd.Series, zone: zoneinfo.ZoneInfo) -> pd.Series:
    """Read naive times as wall-clock times in `zone`; give them in UTC.

    At a daylight-saving change an ambiguous time is read as the first of its two instants,
    and a time that does not exist is moved forward to the first one that does.
    """
    if naive.empty:
        return pd.Series([], index=naive.index, dtype="datetime64[us, UTC]")
    local = naive.dt.tz_localize(
        zone, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward"
    )
    return local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")

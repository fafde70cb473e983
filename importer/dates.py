"""Date-times for the map stage: text cells in, UTC instants and their ISO 8601 text out.

`parse_dates(cells, formats, zone)` reads a column of (trimmed, non-blank) cells with the
mapping's `strptime` formats in order, then as ISO 8601. A time without an offset is a
wall-clock time in `zone`: at a daylight-saving change an ambiguous time is read as the first
of its two instants, and a time that does not exist moves forward to the first that does.
`iso_text(instants)` writes instants as the payload model writes them.

`read_occurred_at(cells, formats, zone, date_only=...)` is `parse_dates` for the
`occurred_at` field, which knows calendar days: a cell that is a day rather than a moment
is placed at noon of that day in `zone`, so that the instant sent (in UTC) falls on the
same calendar day wherever it is shown within eleven hours of `zone`, and on exactly that
day in `zone` itself. Which cells are days: with `date_only=True` every cell (a time of day
written in it is dropped: its day in `zone` counts); with `date_only=None` (the default of
the mapping) the cells that hold only a date (read by a format without a time of day, or
ISO 8601 `YYYY-MM-DD`, which is also how the reader gives a date-only Excel cell); with
`date_only=False` none (midnight, as `parse_dates`).

Everything works a column at a time. pyarrow's `strptime` reads the common case twenty times
as fast as pandas, but it is lenient ("02/30" becomes March 1st, "24" the year 24), so its
reading is only trusted where writing it back with the format gives the cell exactly;
pandas reads every other cell.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# A date-time string that carries its own offset: a time of day, then Z, +hh:mm, +hhmm or
# +hh. (Not a bare date: the "-05" that ends "2024-03-05" is its day, not an offset.)
_HAS_OFFSET = r"[T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
_OFFSET_DIRECTIVE = re.compile(r"%[zZ]")
FIRST_INSTANT = np.datetime64("0001-01-01T00:00:00", "us")
LAST_INSTANT = np.datetime64("9999-12-31T23:59:59.999999", "us")
NOT_A_TIME = np.datetime64("NaT", "us")


def parse_dates(cells: pa.Array, formats: Sequence[str], zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """UTC instants (`datetime64[us]`, NaT where no format and not ISO 8601 reads the cell)."""
    return _read_each(cells, formats, zone)[0]


def read_occurred_at(
    cells: pa.Array, formats: Sequence[str], zone: zoneinfo.ZoneInfo, *, date_only: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    """`parse_dates`, with calendar days placed at noon in `zone` (see the module
    docstring); gives the instants and a mask of the cells read as days."""
    instants, reader_of = _read_each(cells, formats, zone)
    if date_only is False:
        days = np.zeros(len(cells), dtype=bool)
    elif date_only:
        days = ~np.isnat(instants)
    else:
        date_formats = [i for i, fmt in enumerate(formats) if not _TIME_OF_DAY.search(fmt)]
        days = np.isin(reader_of, date_formats)
        by_iso = np.flatnonzero(reader_of == len(formats))
        if by_iso.size:
            bare = pc.match_substring_regex(cells.take(pa.array(by_iso)), _BARE_ISO_DATE)
            days[by_iso] = bare.to_numpy(zero_copy_only=False)
    if days.any():
        instants[days] = _noon_of_day(instants[days], zone)
    return instants, days


def _read_each(
    cells: pa.Array, formats: Sequence[str], zone: zoneinfo.ZoneInfo
) -> tuple[np.ndarray, np.ndarray]:
    """UTC instants, and for each cell the position of the reader that read it (the
    formats in order, then ISO 8601 as `len(formats)`; -1 where none did)."""
    instants = np.full(len(cells), NOT_A_TIME)
    reader_of = np.full(len(cells), -1, dtype=np.int16)
    todo = np.ones(len(cells), dtype=bool)
    for number, reader in enumerate([*(_format_reader(fmt) for fmt in formats), _read_iso]):
        where = np.flatnonzero(todo)
        if not where.size:
            break
        found = reader(cells.take(where), zone)
        instants[where] = found
        read = ~np.isnat(found)
        reader_of[where[read]] = number
        todo[where] = ~read
    return instants, reader_of


# A format that reads a time of day (or an offset, which only a time has).
_TIME_OF_DAY = re.compile(r"%[HIklMSfpXcTRrzZs]")
_BARE_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _noon_of_day(instants: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """Noon, in `zone`, of the day each UTC instant falls on in `zone`; as UTC instants."""
    local = pd.Series(instants).dt.tz_localize("UTC").dt.tz_convert(zone).dt.tz_localize(None)
    noon = (local.dt.normalize() + pd.Timedelta(hours=12)).to_numpy(dtype="datetime64[us]")
    return _localize(noon, zone)


def iso_text(instants: np.ndarray) -> pa.Array:
    """UTC instants as ISO 8601 text, as the payload model writes them: whole seconds, or
    microseconds where there are some, and Z. NaT gives ""."""
    micros = pa.array(instants, pa.timestamp("us"), from_pandas=True)
    seconds = pc.cast(micros, pa.timestamp("s"), safe=False)  # exact where no fraction
    fraction = pc.not_equal(micros, pc.cast(seconds, pa.timestamp("us")))
    text = pc.cast(seconds, pa.string())  # "YYYY-MM-DD HH:MM:SS"
    if pc.any(fraction).as_py():
        text = pc.if_else(fraction, pc.cast(micros, pa.string()), text)
    text = pc.utf8_replace_slice(text, 10, 11, "T")
    return pc.fill_null(pc.binary_join_element_wise(text, "Z", ""), "")


# -- readers: text cells in, UTC instants out -----------------------------------------------

Reader = Callable[[pa.Array, zoneinfo.ZoneInfo], np.ndarray]


def _format_reader(fmt: str) -> Reader:
    if _OFFSET_DIRECTIVE.search(fmt):
        return lambda cells, _: _utc(
            pd.to_datetime(_series(cells), format=fmt, errors="coerce", utc=True)
        )
    return lambda cells, zone: _localize(_strptime(cells, fmt), zone)


def _read_iso(cells: pa.Array, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    instants = np.full(len(cells), NOT_A_TIME)
    text = _series(cells)
    aware = pc.match_substring_regex(cells, _HAS_OFFSET).to_numpy(zero_copy_only=False)
    if aware.any():
        found = pd.to_datetime(text[aware], format="ISO8601", errors="coerce", utc=True)
        instants[aware] = _utc(found)
    if not aware.all():
        naive = pd.to_datetime(text[~aware], format="ISO8601", errors="coerce")
        instants[~aware] = _localize(naive.to_numpy(dtype="datetime64[us]"), zone)
    return instants


def _strptime(cells: pa.Array, fmt: str) -> np.ndarray:
    """Naive date-times (`datetime64[us]`) as `pd.to_datetime(format=fmt)` reads them."""
    instants = np.full(len(cells), NOT_A_TIME)
    try:
        fast = pc.strptime(cells, format=fmt, unit="s", error_is_null=True)
        exact = _written_back_exactly(cells, fast, fmt)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a directive arrow lacks
        taken = np.zeros(len(cells), dtype=bool)
    else:
        taken = exact.to_numpy(zero_copy_only=False)
        instants[taken] = fast.filter(exact).to_numpy().astype("datetime64[us]")
    if not taken.all():
        rest = _series(cells.filter(pa.array(~taken)))
        instants[~taken] = pd.to_datetime(rest, format=fmt, errors="coerce").to_numpy(
            dtype="datetime64[us]"
        )
    return instants


def _written_back_exactly(cells: pa.Array, read: pa.Array, fmt: str) -> pa.Array:
    """Where `read` (arrow's reading of `cells` with `fmt`) written with `fmt` gives the cell.

    Cells that `_plain_pattern(fmt)` matches are so without writing them back: each field
    is in range and zero-padded, and the day is one that every month has."""
    pattern = _plain_pattern(fmt)
    plain = (
        pc.and_(pc.match_substring_regex(cells, pattern), pc.is_valid(read))
        if pattern
        else pa.repeat(pa.scalar(False), len(cells))
    )
    unsure = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    if not unsure.size:
        return plain
    some = pa.array(unsure)
    written = strftime(read.take(some), fmt)
    # Year 0 is written back as it was read, but pandas (like Python) has no year 0.
    exact = pc.and_(pc.equal(written, cells.take(some)), pc.greater(pc.year(read.take(some)), 0))
    exact = pc.fill_null(exact, False).to_numpy(zero_copy_only=False)
    taken = plain.to_numpy(zero_copy_only=False).copy()
    taken[unsure] = exact
    return pa.array(taken)


_PLAIN_FIELDS = {
    "%Y": r"[1-9]\d{3}",
    "%m": r"(?:0[1-9]|1[0-2])",
    "%d": r"(?:0[1-9]|1\d|2[0-8])",  # 29 to 31 are written back: not every month has them
    "%H": r"(?:[01]\d|2[0-3])",
    "%I": r"(?:0[1-9]|1[0-2])",
    "%M": r"[0-5]\d",
    "%S": r"[0-5]\d",
    "%p": r"(?:AM|PM)",
}


def _plain_pattern(fmt: str) -> str | None:
    """A regular expression for the cells that `fmt` certainly reads exactly, or None where
    the format has other directives, repeats one, or mixes 24-hour and 12-hour times."""
    pieces = [piece for piece in _DIRECTIVE.split(fmt) if piece]
    directives = [p for p in pieces if _DIRECTIVE.fullmatch(p)]
    twelve_hour = {"%I", "%p"} & set(directives)
    if (
        any(d not in _PLAIN_FIELDS for d in directives)
        or len(set(directives)) != len(directives)
        or not {"%Y", "%m", "%d"} <= set(directives)
        or (twelve_hour and (len(twelve_hour) != 2 or "%H" in directives))
    ):
        return None
    body = "".join(_PLAIN_FIELDS.get(p, re.escape(p)) for p in pieces)
    return f"^{body}$"


def _localize(naive: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """Wall-clock times in `zone` as UTC instants (see the module docstring for DST)."""
    if not naive.size:
        return naive
    local = pd.Series(naive).dt.tz_localize(
        zone, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward"
    )
    return _utc(local)


def _utc(aware: pd.Series) -> np.ndarray:
    return aware.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")


def _series(cells: pa.Array) -> pd.Series:
    return pd.Series(cells.to_numpy(zero_copy_only=False), dtype=object)


# -- writing instants with a format, fast ---------------------------------------------------


def strftime(instants: pa.Array, fmt: str) -> pa.Array:
    """`pc.strftime` for timestamps in seconds, made of slices of arrow's own ISO text for
    the common directives (ten times as fast); other directives go to `pc.strftime`."""
    pieces = [piece for piece in _DIRECTIVE.split(fmt) if piece]
    if not all(p in _PIECES for p in pieces if _DIRECTIVE.fullmatch(p)):
        return pc.strftime(instants, format=fmt)
    stamp = pc.cast(instants, pa.string())  # "YYYY-MM-DD HH:MM:SS" for years 1 to 9999
    rendered = [_PIECES[p](instants, stamp) if _DIRECTIVE.fullmatch(p) else p for p in pieces]
    return pc.binary_join_element_wise(*rendered, "")


def _stamp_slice(start: int, stop: int) -> Callable[[pa.Array, pa.Array], pa.Array]:
    return lambda _, stamp: pc.utf8_slice_codeunits(stamp, start, stop)


def _twelve_hour(instants: pa.Array, _: pa.Array) -> pa.Array:
    hours = pc.hour(instants)
    after_noon = pc.if_else(pc.greater(hours, 12), pc.subtract(hours, 12), hours)
    twelve = pc.if_else(pc.equal(hours, 0), 12, after_noon)
    return pc.utf8_lpad(pc.cast(twelve, pa.string()), 2, "0")


_DIRECTIVE = re.compile(r"(%.)")
_PIECES: dict[str, Callable[[pa.Array, pa.Array], pa.Array]] = {
    "%Y": _stamp_slice(0, 4),
    "%m": _stamp_slice(5, 7),
    "%d": _stamp_slice(8, 10),
    "%H": _stamp_slice(11, 13),
    "%M": _stamp_slice(14, 16),
    "%S": _stamp_slice(17, 19),
    "%I": _twelve_hour,
    "%p": lambda instants, _: pc.if_else(pc.less(pc.hour(instants), 12), "AM", "PM"),
    "%%": lambda *_: pa.scalar("%"),
}

"""Records far wider than the header, read apart from pandas' parser.

pandas' parser gives every record of a file as many fields as its widest may have (the
`names` it is given), so one record of a million fields (a line of commas) in the first MiB
made every row a million cells wide: tens of GB for a 1 MiB file (issue 14). A record of
the sample (parsed whole by the csv module when the table is opened) with more fields than
`most_fields(header_fields)` is therefore read apart: pandas skips it (`skiprows` counts
records, as the reader does), and `put_back` returns it to its place as any row with extra
values is read: the header's fields, marked "row has 1000005 fields, the header has 5".
The records pandas reads are then at most about twice as wide as the header, and the rows
read apart cost no more than the sample they came from.

What this does not do: a record that wide further on than the sample is still the
InputError the delimited reader documents (no row of this table).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RowApart:
    """A record read apart: its number and what the reader makes of it."""

    record: int  # 0-based, counting records below the header as the parser does
    cells: tuple[str, ...]  # its first fields, as many as the header has names
    error: str  # why the row is broken; "" when its fields past the header are all empty


@dataclass(frozen=True)
class Apart:
    """The sample's records read apart: every one pandas must skip, and those that are rows
    (a record of nothing but delimiters is a blank row: skipped, and no row)."""

    skipped: tuple[int, ...] = ()
    rows: tuple[RowApart, ...] = ()


def most_fields(header_fields: int) -> int:
    """The most fields a record may have and still be read by pandas: twice the header's
    fields and a few, so memory stays within a small multiple of a regular file's."""
    return 2 * header_fields + 4


def read_apart(
    records: Iterable[list[str]], *, header_row: int, columns: int, most: int
) -> tuple[int, Apart]:
    """From the sample's records (row 1 first): the most fields of any with at most `most`,
    and the records below the header row with more, read apart."""
    widest = 0
    skipped: list[int] = []
    rows: list[RowApart] = []
    for number, record in enumerate(records, start=1):
        if len(record) <= most:
            widest = max(widest, len(record))
            continue
        if number <= header_row:  # rows above the header are skipped whatever they hold
            continue
        skipped.append(number - header_row - 1)
        last = next((i for i in range(len(record) - 1, -1, -1) if record[i]), None)
        if last is None:
            continue
        error = "" if last < columns else f"row has {last + 1} fields, the header has {columns}"
        cells = tuple(record[:columns]) + ("",) * max(columns - len(record), 0)
        rows.append(RowApart(record=skipped[-1], cells=cells, error=error))
    return widest, Apart(skipped=tuple(skipped), rows=tuple(rows))


def renumber(index: pd.Index, skipped: tuple[int, ...]) -> pd.Index:
    """pandas' numbers for the records it read (it counts only those) made the records'
    own numbers, the `skipped` ones (ascending) counted in."""
    read = index.to_numpy()
    # The k-th skipped record comes after `skipped[k] - k` records that pandas read.
    before = np.searchsorted(np.asarray(skipped) - np.arange(len(skipped)), read, side="right")
    return pd.Index(read + before)


def put_back(
    raws: Iterable[pd.DataFrame], rows: tuple[RowApart, ...], *, width: int, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The raw chunks with the rows read apart back in their places, at most `chunk_rows`
    records each."""
    pending = list(rows)
    for raw in raws:
        due = [row for row in pending if len(raw) and row.record <= raw.index[-1]]
        if not due:
            yield raw
            continue
        pending = pending[len(due) :]
        merged = pd.concat([raw, _frame(due, width)]).sort_index(kind="stable")
        yield from _sliced(merged, chunk_rows)
    if pending:
        yield from _sliced(_frame(pending, width), chunk_rows)


def mark(errors: np.ndarray, index: pd.Index, rows: tuple[RowApart, ...]) -> None:
    """Write the errors of the rows read apart into `errors` (one per record of `index`)."""
    said = {row.record: row.error for row in rows if row.error}
    for position in np.flatnonzero(index.isin(list(said))):
        errors[position] = said[index[int(position)]]


def _frame(rows: list[RowApart], width: int) -> pd.DataFrame:
    padding = ("",) * (width - len(rows[0].cells))
    return pd.DataFrame(
        [row.cells + padding for row in rows],
        index=[row.record for row in rows],
        columns=range(width),
        dtype=object,
    )


def _sliced(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]

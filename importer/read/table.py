"""What every reader shares: the options, the opened table, and the header's rules.

`SourceOptions` says how to read an input, `SourceTable` is one opened input whose records
come from `chunks()` (its promises are in the package docstring), and `header_names` turns
a header row's cells into column names by the rules below, for every format.

The header: names are stripped of surrounding whitespace (and a UTF-8 byte-order mark).
A blank header cell between named ones is named `column_N`, N its column number counting
from 1 at the left (A=1); blank cells after the last name are dropped (values under them
make the row broken). Repeated names, the reserved name `__read_error__`, or a header row
with no name at all are an InputError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from importer.errors import InputError

READ_ERROR_COLUMN = "__read_error__"

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")


@dataclass(frozen=True, kw_only=True)
class SourceOptions:
    """How to read the input; the defaults detect what they can.

    `encoding` and `delimiter` apply to delimited text, `sheet` to workbooks; each is
    ignored for the other kind of file.
    """

    encoding: str | None = None  # a Python codec name; None: detect (delimited text only)
    delimiter: str | None = None  # one character (or "tab"); None: sniff among , ; tab |
    sheet: str | int | None = None  # a workbook's sheet: name or 0-based index; None: first
    header_row: int = 1  # 1-based spreadsheet row of the header; rows above it are skipped
    chunk_rows: int = 50_000  # at most this many records per chunk

    def __post_init__(self) -> None:
        if self.header_row < 1:
            raise ValueError(f"header_row must be 1 or more, not {self.header_row}")
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be 1 or more, not {self.chunk_rows}")


class SourceTable:
    """An opened input: its header is read, its records come from `chunks()`.

    `format` is "csv" or "excel". `encoding` and `delimiter` (delimited text) and `sheet`
    (workbooks) are what was named or detected; the others are None.
    """

    def __init__(
        self,
        *,
        path: Path,
        columns: list[str],
        format: str,
        header_row: int,
        rows: Callable[[], Iterator[pd.DataFrame]],
        encoding: str | None = None,
        delimiter: str | None = None,
        sheet: str | None = None,
        rows_hint: int | None = None,
    ) -> None:
        self.path = path
        self.columns = columns
        self.format = format
        self.header_row = header_row
        self.encoding = encoding
        self.delimiter = delimiter
        self.sheet = sheet
        self.rows_hint = rows_hint  # about how many records there are (for progress), if known
        self._rows = rows

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The records in file order, as chunks keeping the package docstring's promises.

        Each call reads afresh from the first record. Chunks are never empty: a file with a
        header and no records yields none. Raises InputError for a fault met mid-file.
        """
        return self._rows()

    def __repr__(self) -> str:
        where = (
            f"sheet={self.sheet!r}"
            if self.format == "excel"
            else (f"encoding={self.encoding!r}, delimiter={self.delimiter!r}")
        )
        return f"SourceTable({str(self.path)!r}, {self.format}, {where}, columns={self.columns})"


def header_names(cells: list[str], *, first_column: int, row: int, source: str) -> list[str]:
    """Column names from the header row's cells (see the module docstring).

    `first_column` is the 0-based column of `cells[0]`, for naming blank cells `column_N`.
    """
    names = [cell.strip() for cell in cells]
    if names:
        names[0] = names[0].removeprefix("\ufeff").strip()
    while names and not names[-1]:
        names.pop()
    if not names:
        raise InputError(
            f"{source}: row {row}, the header row, is empty; set header_row to the row "
            "that holds the column names"
        )
    names = [name or f"column_{first_column + i + 1}" for i, name in enumerate(names)]
    if READ_ERROR_COLUMN in names:
        raise InputError(f"{source}: the header uses the reserved name '{READ_ERROR_COLUMN}'")
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(first_column + i + 1)
    repeated = [
        f"'{name}' (columns {', '.join(map(str, at))})"
        for name, at in positions.items()
        if len(at) > 1
    ]
    if repeated:
        raise InputError(f"{source}: the header repeats column names: {'; '.join(repeated)}")
    return names


def read_start(path: Path, size: int) -> tuple[bytes, bool]:
    """The first `size` bytes of the file, and whether that is all of it."""
    try:
        with open(path, "rb") as file:
            sample = file.read(size + 1)
    except OSError as error:
        raise InputError(f"{path}: cannot be read: {error.strerror or error}") from None
    return sample[:size], len(sample) <= size

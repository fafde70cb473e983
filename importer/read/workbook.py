"""Workbooks (`.xlsx`, `.xlsm`, `.xls`, `.ods`), read with calamine, openpyxl being the
fallback for `.xlsx`/`.xlsm` files calamine cannot open.

calamine has no streaming API: the chosen sheet is parsed into memory (outside Python) when
the table is opened and converted to text chunk by chunk. Cells become text as a person
reads them: 123 -> "123", 12.5 -> "12.5" (other numbers: Python's repr of the float),
TRUE/FALSE, dates as ISO 8601 ("2024-03-05", or "2024-03-05T14:30:00" when there is a time
of day; a date-time at midnight reads as the date), times "14:30:00"; formulas give their
cached value; error cells (#N/A) are blank. A row with a value under no header keeps its
first values and says so ("row has a value in column J, which has no header").

Before a workbook is opened, an encrypted one (an OLE file with an `EncryptionInfo` stream,
whatever its name) is refused, and so is a zip whose parts would inflate too far: a part
over 1 MiB more than 100 times, or all parts beyond 2 GiB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import zipfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import python_calamine

from importer.encodings import choose_encoding
from importer.errors import InputError
from importer.read.table import (
    READ_ERROR_COLUMN,
    SourceOptions,
    SourceTable,
    header_names,
    read_start,
)

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_MARK = "EncryptionInfo".encode("utf-16-le")  # a stream of an encrypted OOXML file
# Zip bombs: a part may not inflate more than _MAX_INFLATION times (Apache POI's rule; real
# sheets deflate 5 to 20 times) once it is over _INFLATION_FREE bytes, nor all parts together
# beyond _MAX_INFLATED bytes. The sizes the zip declares are binding: calamine's zip reader
# and Python's (openpyxl) stop at a part's declared size.
_MAX_INFLATION = 100
_INFLATION_FREE = 1 << 20
_MAX_INFLATED = 1 << 31

_Rows = Generator[Sequence[object], None, None]


def _no_rows() -> _Rows:
    yield from ()


@dataclass(frozen=True)
class _Sheet:
    """A chosen sheet: its name and a way to walk its rows from row 1."""

    name: str
    rows: Callable[[], _Rows]  # every row from row 1; cells from first_column
    first_column: int  # 0-based column of each row's first cell
    height: int | None = None  # rows from row 1 to the last used one, where known


def open_workbook(path: Path, options: SourceOptions) -> SourceTable:
    source = str(path)
    _check_workbook_bytes(path)
    sheet = _load_sheet(path, options.sheet)
    header_row = options.header_row
    with contextlib.closing(sheet.rows()) as rows:
        above = list(itertools.islice(rows, header_row - 1))
        header = next(rows, None)
    if header is None:
        if not above:
            raise InputError(f"{source}: sheet '{sheet.name}' is empty")
        raise InputError(
            f"{source}: sheet '{sheet.name}' has {len(above)} rows, so row {header_row} "
            "cannot be the header row"
        )
    cells = [_cell_text(value) for value in header]
    where = f"{source} (sheet '{sheet.name}')"
    columns = header_names(cells, first_column=sheet.first_column, row=header_row, source=where)
    return SourceTable(
        path=path,
        columns=columns,
        format="excel",
        header_row=header_row,
        sheet=sheet.name,
        rows=lambda: _workbook_chunks(sheet, columns, header_row, options.chunk_rows),
        rows_hint=sheet.height - header_row if sheet.height else None,
    )


def check_workbook(path: Path) -> None:
    """InputError unless `path` is safe to give a workbook parser (as `open_table` checks)."""
    _check_workbook_bytes(path)


def _check_workbook_bytes(path: Path) -> None:
    """InputError unless the file's first bytes fit its extension (zip, or OLE for .xls)."""
    source, suffix = str(path), path.suffix.lower()
    start, at_eof = read_start(path, 1 << 16)
    if not start:
        raise InputError(f"{source}: the file is empty")
    if start.startswith(_OLE_MAGIC) and _ENCRYPTED_MARK in start:  # whatever its name
        raise InputError(
            f"{source}: the workbook is password-protected (encrypted); save a copy "
            "without a password and import that"
        )
    expected = _OLE_MAGIC if suffix == ".xls" else _ZIP_MAGIC
    if start.startswith(expected):
        if expected == _ZIP_MAGIC:
            _check_zip_sizes(path)
        return
    if start.startswith(_OLE_MAGIC):
        raise InputError(f"{source}: is an old-style Excel file, not {suffix}: name it .xls")
    if start.startswith(_ZIP_MAGIC):
        raise InputError(f"{source}: is an .xlsx-style (zip) workbook, not {suffix}: name it .xlsx")
    if b"\x00" not in start and _looks_like_text(start, at_eof):
        raise InputError(f"{source}: is text, not a {suffix} workbook: if it is CSV, name it .csv")
    raise InputError(f"{source}: is not a {suffix} workbook (its content is not one)")


def _check_zip_sizes(path: Path) -> None:
    """InputError for a zip whose parts would inflate too far to read (a zip bomb)."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # a damaged zip: calamine (or openpyxl) says what is wrong with it
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > _INFLATION_FREE and ratio > _MAX_INFLATION:
            raise InputError(
                f"{path}: refused as a possible zip bomb: its part {part.filename} would "
                f"inflate {ratio:,.0f} times, to {part.file_size:,} bytes; if the workbook "
                "is genuine, save the sheet as CSV and import that"
            )
    total = sum(part.file_size for part in parts)
    if total > _MAX_INFLATED:
        raise InputError(
            f"{path}: the workbook inflates to {total:,} bytes, more than "
            f"{_MAX_INFLATED >> 30} GiB: save the sheet as CSV and import that"
        )


def _looks_like_text(start: bytes, at_eof: bool) -> bool:
    try:
        choose_encoding(start, at_eof=at_eof, named=None, source="")
    except InputError:
        return False
    return True


def _load_sheet(path: Path, choice: str | int | None) -> _Sheet:
    """The chosen sheet, through calamine; through openpyxl if calamine cannot open the file."""
    try:
        return _calamine_sheet(path, choice)
    except python_calamine.PasswordError:
        raise InputError(
            f"{path}: the workbook is password-protected; save a copy without a password"
        ) from None
    except python_calamine.CalamineError as error:
        if path.suffix.lower() not in (".xlsx", ".xlsm"):
            raise InputError(f"{path}: cannot be read as a workbook: {error}") from None
        return _openpyxl_sheet(path, choice, calamine_error=error)


def _calamine_sheet(path: Path, choice: str | int | None) -> _Sheet:
    with python_calamine.CalamineWorkbook.from_path(path) as workbook:
        name = _sheet_name(workbook.sheet_names, choice, path)
        sheet = workbook.get_sheet_by_name(name)
    start = sheet.start
    if start is None:  # nothing in the sheet
        return _Sheet(name=name, rows=_no_rows, first_column=0)

    def rows() -> _Rows:
        # iter_rows() yields every row from row 1 (empty ones above the data included),
        # each starting at the sheet's first used column.
        yield from sheet.iter_rows()

    return _Sheet(name=name, rows=rows, first_column=start[1], height=start[0] + sheet.height)


def _openpyxl_sheet(path: Path, choice: str | int | None, *, calamine_error: Exception) -> _Sheet:
    import openpyxl

    # openpyxl fails in many ways on a file it cannot read (zip, XML, key errors...); each
    # means the same to the user, so each is caught and told as calamine's reason.
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:
        raise InputError(f"{path}: cannot be read as a workbook: {calamine_error}") from error
    try:
        name = _sheet_name(workbook.sheetnames, choice, path)
        # The sheet's recorded dimensions start where calamine's rows do: at the first
        # used column, so blank header cells left of the table are not columns.
        first_column = workbook[name].min_column
    finally:
        workbook.close()

    def rows() -> _Rows:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            yield from book[name].iter_rows(min_row=1, min_col=first_column, values_only=True)
        except Exception as error:
            raise InputError(f"{path}: cannot read sheet '{name}': {error}") from error
        finally:
            book.close()

    return _Sheet(name=name, rows=rows, first_column=first_column - 1)


def _sheet_name(names: list[str], choice: str | int | None, path: Path) -> str:
    if not names:
        raise InputError(f"{path}: the workbook has no sheets")
    if choice is None:
        return names[0]
    if isinstance(choice, int) and 0 <= choice < len(names):
        return names[choice]
    if isinstance(choice, str) and choice in names:
        return choice
    listed = ", ".join(f"{i}: '{name}'" for i, name in enumerate(names))
    raise InputError(f"{path}: no sheet {choice!r}; the sheets are {listed}")


def _workbook_chunks(
    sheet: _Sheet, columns: list[str], header_row: int, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    n = len(columns)
    with contextlib.closing(sheet.rows()) as rows:
        below = itertools.islice(rows, header_row, None)
        numbered = zip(itertools.count(header_row + 1), below, strict=False)
        while True:
            numbers, records, errors = _workbook_records(
                numbered, n, sheet.first_column, chunk_rows
            )
            if not numbers:
                return
            frame = pd.DataFrame(records, index=numbers, columns=columns, dtype=object)
            for column in columns:
                frame[column] = _date_times_as_text(frame[column])
            frame[READ_ERROR_COLUMN] = pd.Series(errors, index=frame.index, dtype=object)
            yield frame


def _workbook_records(
    numbered: Iterable[tuple[int, Sequence[object]]], n: int, first_column: int, limit: int
) -> tuple[list[int], list[list[str | dt.datetime]], list[str]]:
    """The next `limit` non-empty rows as text (date-times aside: `_workbook_chunks` makes
    them text a column at a time): row numbers, `n` cells each, problems."""
    numbers: list[int] = []
    records: list[list[str | dt.datetime]] = []
    errors: list[str] = []
    for number, values in numbered:
        # Text cells need nothing; date-times are turned into text a column at a time.
        cells = [
            value if type(value) is str or type(value) is dt.datetime else _cell_text(value)
            for value in values
        ]
        if not any(cells):
            continue
        if len(cells) == n:
            record, extra = cells, None
        else:
            record = cells[:n]
            if len(record) < n:
                record.extend([""] * (n - len(record)))
            extra = next((i for i in range(len(cells) - 1, n - 1, -1) if cells[i]), None)
        numbers.append(number)
        records.append(record)
        errors.append(
            ""
            if extra is None
            else f"row has a value in column {_column_letters(first_column + extra)}, "
            "which has no header"
        )
        if len(numbers) == limit:
            break
    return numbers, records, errors


def _date_times_as_text(cells: pd.Series) -> pd.Series:
    """The column with its `datetime` cells made text as `_cell_text` makes them;
    vectorised with pyarrow (a workbook's date column is 100,000 `isoformat` calls)."""
    values = cells.to_numpy(copy=True)
    where = np.flatnonzero([type(value) is dt.datetime for value in values])
    if not where.size:
        return cells
    stamps = values[where].tolist()
    if any(stamp.tzinfo is not None or not 1000 <= stamp.year <= 9999 for stamp in stamps):
        values[where] = [_cell_text(stamp) for stamp in stamps]
        return pd.Series(values, index=cells.index, dtype=object)
    micros = pa.array(stamps, pa.timestamp("us"))
    day = pc.cast(micros, pa.date32())
    seconds = pc.cast(micros, pa.timestamp("s"), safe=False)
    millis = pc.cast(micros, pa.timestamp("ms"), safe=False)
    text = pc.if_else(  # as isoformat: seconds; milliseconds when whole; else microseconds
        pc.equal(micros, pc.cast(seconds, pa.timestamp("us"))),
        pc.cast(seconds, pa.string()),
        pc.if_else(
            pc.equal(micros, pc.cast(millis, pa.timestamp("us"))),
            pc.cast(millis, pa.string()),
            pc.cast(micros, pa.string()),
        ),
    )
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    midnight = pc.equal(micros, pc.cast(day, pa.timestamp("us")))
    values[where] = pc.if_else(midnight, pc.cast(day, pa.string()), text).to_pylist()
    return pd.Series(values, index=cells.index, dtype=object)


def _cell_text(value: object) -> str:
    """A workbook cell's value as the text a person reads (see the module docstring)."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time() and value.tzinfo is None:
            return value.date().isoformat()
        whole_ms = value.microsecond and not value.microsecond % 1000
        return value.isoformat(timespec="milliseconds" if whole_ms else "auto")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        minutes, seconds = divmod(round(value.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return str(value)


def _column_letters(index: int) -> str:
    """Excel's letters for the 0-based column `index` (0 -> A, 26 -> AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters

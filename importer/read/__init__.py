"""The read stage: a CSV or Excel file in, chunks of text rows numbered as a spreadsheet shows.

`open_table(path, options)` reads the header only (and, for delimited text, a sample for
detecting the encoding and the delimiter), so a mapping can be checked against
`table.columns` before any row is read. `table.chunks()` then yields the records as pandas
DataFrames, at most `chunk_rows` each. What every chunk promises:

- columns: `table.columns` followed by `READ_ERROR_COLUMN` ("__read_error__");
- cells: Python `str`, "" for blank — never NaN, None or a number (object columns, or
  `pd.ArrowDtype(pa.string())` columns where arrow's reader read them).
  Text is kept as written ("00123", "1.0", "NA" and "null" stay so); cells are not
  trimmed (the mapper trims);
- index: the spreadsheet row number of each record, as Excel shows it: the header is row
  `header_row`; a record is a row even when a quoted cell spans several lines; blank lines
  and empty rows are counted but yield no record (so numbers can skip);
- `READ_ERROR_COLUMN`: "" for a sound row, else why the row is broken (a row with more
  values than the header has columns keeps its first values and says so).

The package follows the seams of the work:

- `table`: the options, the opened table, and the header's rules, for every format;
- `delimited`: delimited text: encoding and delimiter detection, pandas' chunked parser,
  and the hand-over from arrow's reader (`arrow`) at the first irregular record; records
  far wider than the header are read apart (`wide_rows`);
- `workbook`: `.xlsx`, `.xlsm`, `.xls`, `.ods` through calamine (openpyxl as the fallback).

Every failure to read is an `InputError` whose message names the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

from importer.errors import InputError
from importer.read.delimited import open_delimited
from importer.read.table import (
    READ_ERROR_COLUMN,
    TEXT_SUFFIXES,
    WORKBOOK_SUFFIXES,
    SourceOptions,
    SourceTable,
)
from importer.read.workbook import check_workbook, open_workbook


def open_table(path: str | Path, options: SourceOptions = SourceOptions()) -> SourceTable:
    """Open `path` and read its header; raise InputError if it cannot be read as a table.

    The format follows the extension: `.csv`, `.tsv`, `.txt` are delimited text;
    `.xlsx`, `.xlsm`, `.xls`, `.ods` are workbooks; anything else is an InputError.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES + WORKBOOK_SUFFIXES:
        accepted = ", ".join(TEXT_SUFFIXES + WORKBOOK_SUFFIXES)
        raise InputError(f"{path}: unknown file type '{path.suffix}'; accepted: {accepted}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix in TEXT_SUFFIXES:
        return open_delimited(path, options)
    return open_workbook(path, options)


__all__ = [
    "READ_ERROR_COLUMN",
    "TEXT_SUFFIXES",
    "WORKBOOK_SUFFIXES",
    "SourceOptions",
    "SourceTable",
    "check_workbook",
    "open_table",
]

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
- `READ_ERROR_COLUMN`: "" for a sound row, else why the row is broken. A row with more
  values than the header has columns keeps its first values and says so
  ("row has 9 fields, the header has 7"; in a workbook: "row has a value in column J,
  which has no header"); extra fields that are empty (a trailing delimiter) are ignored.
  A row with fewer fields is sound: the missing cells are "". Except the last row of
  delimited text that ends without a line break: with fewer fields than the header it
  is the mark of a file cut off mid-row, and the row says so ("the file ends in this
  row, after 4 of 5 fields, without a line break: was it cut off?").

The header: names are stripped of surrounding whitespace (and a UTF-8 byte-order mark).
A blank header cell between named ones is named `column_N`, N its column number counting
from 1 at the left (A=1); blank cells after the last name are dropped (values under them
make the row broken, as above). Repeated names, the reserved name `__read_error__`, or a
header row with no name at all are an InputError.

Delimited text (`.csv`, `.tsv`, `.txt`) streams: memory does not grow with the file's
length. A UTF-8 file is read by arrow's streaming reader (several times as fast) for as long
as every record has the header's fields; from the first that does not (a ragged row, a bad
byte, a quote never closed), and for other encodings, pandas' C parser reads, and it alone
says what is wrong: both give exactly the same chunks. The encoding and the delimiter are
detected unless named (see `importer.encodings` and `_sniff_delimiter`). Faults the reader
only meets mid-file are an InputError raised from `chunks()` naming the row or line: a quote
that is never closed, a row with so many fields it cannot be a row of this table (more than
any record in the first MiB has, and more than the header's count plus `_SPARE_FIELDS`),
bytes that do not decode, a NUL byte. A whitespace-only line is not blank: its cells are
kept as they are.

Workbooks (`.xlsx`, `.xlsm`, `.xls`, `.ods`) are read with calamine, openpyxl being the
fallback for `.xlsx`/`.xlsm` files calamine cannot open. calamine has no streaming API: the
chosen sheet is parsed into memory (outside Python) when the table is opened and converted
to text chunk by chunk. Cells become text as a person reads them: 123 -> "123", 12.5 ->
"12.5" (other numbers: Python's repr of the float), TRUE/FALSE, dates as ISO 8601
("2024-03-05", or "2024-03-05T14:30:00" when there is a time of day; a date-time at
midnight reads as the date), times "14:30:00"; formulas give their cached value; error
cells (#N/A) are blank. Before a workbook is opened, an encrypted one (an OLE file with an
`EncryptionInfo` stream, whatever its name) is refused, and so is a zip whose parts would
inflate too far: a part over 1 MiB more than 100 times, or all parts beyond 2 GiB.

Every failure to read is an `InputError` whose message names the file and what is wrong.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import itertools
import re
import zipfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import python_calamine

from importer.encodings import (
    BadBytes,
    CheckedFile,
    choose_encoding,
    decode_sample,
    is_ascii_compatible,
    line_at,
)
from importer.errors import InputError

READ_ERROR_COLUMN = "__read_error__"

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")

_DELIMITERS = (",", ";", "\t", "|")  # sniffed in this order of preference
_DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t"}
_SNIFF_RECORDS = 5  # records after the header that a delimiter's field count must agree with
_SAMPLE_START = 1 << 20  # bytes read to detect the encoding and find the header
_SAMPLE_MAX = 1 << 24
_SPARE_FIELDS = 4  # extra fields a CSV row may have (beyond any row of the sample) and be kept
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
        """The records in file order, as chunks keeping the module docstring's promises.

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
        return _open_delimited(path, options)
    return _open_workbook(path, options)


# -- the header, for every format ------------------------------------------------------------


def _header_names(cells: list[str], *, first_column: int, row: int, source: str) -> list[str]:
    """Column names from the header row's cells (see the module docstring for the rules).

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


# -- delimited text ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _DelimitedPlan:
    """Everything `_delimited_chunks` needs, settled when the table is opened."""

    path: Path
    encoding: str
    delimiter: str
    columns: list[str]
    width: int  # fields parsed per record: the header's names plus spare ones
    header_row: int
    chunk_rows: int
    cut_after: int | None = None  # the file ends mid-row, after this many fields
    # Fields of every record when arrow's reader may read the file (see `_arrow_records`),
    # else None.
    arrow_fields: int | None = None


def _open_delimited(path: Path, options: SourceOptions) -> SourceTable:
    source = str(path)
    delimiter = _named_delimiter(options.delimiter, source)
    header_row = options.header_row
    size = _SAMPLE_START
    while True:
        sample, at_eof = _read_start(path, size)
        if not sample:
            raise InputError(f"{source}: the file is empty")
        encoding = choose_encoding(sample, at_eof=at_eof, named=options.encoding, source=source)
        text = decode_sample(sample, encoding, at_eof=at_eof, source=source)
        chosen = delimiter or _sniff_delimiter(text, header_row, at_eof=at_eof)
        records = _complete_records(text, chosen, header_row + 1, at_eof=at_eof)
        if len(records) > header_row or at_eof or size >= _SAMPLE_MAX:
            break
        size *= 4
    if len(records) < header_row:
        if not at_eof:
            raise InputError(
                f"{source}: row {header_row}, the header row, does not end within the first "
                f"{_SAMPLE_MAX >> 20} MiB (a quote that is never closed?)"
            )
        raise InputError(
            f"{source}: the file has {len(records)} rows, so row {header_row} cannot be "
            "the header row"
        )
    header = records[header_row - 1]
    columns = _header_names(header, first_column=0, row=header_row, source=source)
    plan = _DelimitedPlan(
        path=path,
        encoding=encoding,
        delimiter=chosen,
        columns=columns,
        # Room for every record of the sample: the parser's first record must fit (pandas
        # would take extra fields there for an index), and ragged files get spare room.
        width=max(len(columns) + _SPARE_FIELDS, _widest_record(text, chosen, at_eof=at_eof)),
        header_row=header_row,
        chunk_rows=options.chunk_rows,
        cut_after=_cut_after(path, encoding, chosen, len(columns)),
    )
    if _arrow_may_read(plan, text):
        plan = replace(plan, arrow_fields=len(header))
    return SourceTable(
        path=path,
        columns=columns,
        format="csv",
        header_row=header_row,
        encoding=encoding,
        delimiter=chosen,
        rows=lambda: _delimited_chunks(plan),
        rows_hint=_estimate_records(path, sample, header_row),
    )


_TAIL = 1 << 16  # bytes read from the end of a file to see whether it ends mid-row


def _cut_after(path: Path, encoding: str, delimiter: str, width: int) -> int | None:
    """The fields of the file's last line if the file looks cut off mid-row, else None.

    Cut off: no line break at the end, and the last line has fewer fields than the header
    (a last row with every field and no line break is whole: some tools write files so).
    Judged for encodings where ASCII is ASCII, and only for a last line without quotes
    (one with quotes may end a cell that spans lines) that starts within the last 64 KiB.
    """
    if not is_ascii_compatible(encoding):
        return None
    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            file.seek(max(size - _TAIL, 0))
            tail = file.read()
    except OSError:
        return None
    if not tail or tail.endswith((b"\n", b"\r")):
        return None
    last = re.split(rb"[\r\n]", tail)[-1]
    mark = delimiter.encode("ascii")
    if b'"' in last or (len(last) == len(tail) and size > _TAIL):
        return None
    if not last.replace(mark, b"").strip():  # only delimiters: a blank row, not a record
        return None
    fields = last.count(mark) + 1
    return fields if fields < width else None


def _estimate_records(path: Path, sample: bytes, header_row: int) -> int | None:
    """About how many records the file holds, from the sample's bytes per line."""
    lines = sample.count(b"\n")
    if lines == 0:
        return None
    return max(int(path.stat().st_size * lines / len(sample)) - header_row, 0)


def _named_delimiter(delimiter: str | None, source: str) -> str | None:
    if delimiter is None:
        return None
    delimiter = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise InputError(f"{source}: the delimiter must be one character, not {delimiter!r}")
    return delimiter


def _read_start(path: Path, size: int) -> tuple[bytes, bool]:
    """The first `size` bytes of the file, and whether that is all of it."""
    try:
        with open(path, "rb") as file:
            sample = file.read(size + 1)
    except OSError as error:
        raise InputError(f"{path}: cannot be read: {error.strerror or error}") from None
    return sample[:size], len(sample) <= size


def _records(text: str, delimiter: str, limit: int) -> tuple[list[list[str]], bool]:
    """Up to `limit` records parsed from `text` as the CSV parser reads them (blank: []),
    and whether parsing stopped at a field too long for the csv module: the records before
    that field all end within `text`."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"')
    records: list[list[str]] = []
    try:
        for record in itertools.islice(reader, limit):
            records.append(record)
    except csv.Error:
        return records, True
    return records, False


def _complete_records(text: str, delimiter: str, limit: int, *, at_eof: bool) -> list[list[str]]:
    """Up to `limit` records from `text` that certainly end within it."""
    records, stopped = _records(text, delimiter, limit + 1)
    if not at_eof and not stopped and len(records) <= limit:
        records = records[:-1]  # the last one may run on past the sample
    return records[:limit]


def _widest_record(text: str, delimiter: str, *, at_eof: bool) -> int:
    """The most fields of any record that ends within `text`."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"')
    widths = [0]
    try:
        widths.extend(len(record) for record in reader)
    except csv.Error:  # a field too long for the csv module: the records before it are whole
        return max(widths)
    if not at_eof:
        widths.pop()  # the last record may run on past the sample
    return max(widths, default=0)


def _sniff_delimiter(text: str, header_row: int, *, at_eof: bool) -> str:
    """The delimiter among , ; tab | that splits the header row best.

    Best: the most data records (of the next few) with as many fields as the header, then
    the most header fields, then the order above. A header that no candidate splits is a
    one-column file, read with ",".
    """
    best, best_key = ",", (-1, 0, 0)
    for rank, delimiter in enumerate(_DELIMITERS):
        records = _complete_records(text, delimiter, header_row + _SNIFF_RECORDS, at_eof=at_eof)
        if len(records) < header_row:
            continue
        width = len(records[header_row - 1])
        if width < 2:
            continue
        agreeing = sum(len(record) == width for record in records[header_row:] if record)
        key = (agreeing, width, -rank)
        if key > best_key:
            best, best_key = delimiter, key
    return best


def _delimited_chunks(plan: _DelimitedPlan) -> Iterator[pd.DataFrame]:
    held = None  # one chunk is held back: the last one's last row may be cut off
    for raw in _raw_records(plan):
        chunk = _delimited_chunk(raw, plan)
        if len(chunk):
            if held is not None:
                yield held
            held = chunk
    if held is not None:
        yield _mark_cut_off(held, plan)


def _raw_records(plan: _DelimitedPlan) -> Iterator[pd.DataFrame]:
    """Raw chunks (fields numbered from 0, records numbered from 0 below the header): from
    arrow's reader while the file is regular, from pandas' from the first irregular record."""
    start = 0
    if plan.arrow_fields is not None:
        stopped_at = yield from _arrow_records(plan, plan.arrow_fields)
        if stopped_at is None:
            return
        start = stopped_at
    yield from _pandas_records(plan, start)


def _arrow_may_read(plan: _DelimitedPlan, sample: str) -> bool:
    """Whether arrow's reader can give exactly what pandas' gives, barring surprises met
    later (which hand over to pandas): UTF-8, not cut off, and the header and the rows
    above it one line each (an even number of quotes on each line: no quoted cell runs on
    into the next), so that arrow's `skip_rows` skips what pandas' `skiprows` does."""
    if codecs.lookup(plan.encoding).name not in ("utf-8", "utf-8-sig"):
        return False
    # Lines as CSV ends them (\n, \r\n or \r), not as str.splitlines does (\f, \u2028...).
    above = list(itertools.islice(io.StringIO(sample, newline=""), plan.header_row))
    return (
        plan.cut_after is None
        and len(above) == plan.header_row
        and all(line.count('"') % 2 == 0 for line in above)
    )


# Bytes arrow parses at a time; chunks are gathered from its batches. Blocks a few times
# smaller than this keep the peak memory of a long file flat (measured by `bench`).
_ARROW_BLOCK = 1 << 18


def _arrow_records(plan: _DelimitedPlan, fields: int) -> Generator[pd.DataFrame, None, int | None]:
    """The records read by arrow's streaming reader (several times as fast as pandas'), as
    long as each has exactly `fields` fields and the bytes are sound.

    Returns None once the whole file is read, or the number of records handed out before
    it met one that is not so (a ragged row, a bad byte, a quote never closed): pandas'
    reader goes on from there and says what is wrong, as it alone would. (A blank line is
    a record of empty fields to both, dropped later.)
    """
    names = [str(i) for i in range(fields)]
    options = {
        "read_options": pa_csv.ReadOptions(
            column_names=names, skip_rows=plan.header_row, block_size=_ARROW_BLOCK
        ),
        "parse_options": pa_csv.ParseOptions(
            delimiter=plan.delimiter,
            quote_char='"',
            double_quote=True,
            escape_char=False,
            newlines_in_values=True,
            ignore_empty_lines=False,
            invalid_row_handler=lambda _: "error",
        ),
        "convert_options": pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }
    handed_out = 0
    gathered: list[pa.RecordBatch] = []
    try:
        with CheckedFile(plan.path, plan.encoding) as file:
            for batch in pa_csv.open_csv(file, **options):
                gathered.append(batch)
                if sum(len(b) for b in gathered) >= plan.chunk_rows:
                    frames, gathered = _raw_frames(gathered, handed_out, plan.chunk_rows)
                    for raw in frames:
                        handed_out += len(raw)
                        yield raw
    except (pa.ArrowException, BadBytes, UnicodeError, OSError):
        return handed_out
    if gathered and _ends_in_open_quote(plan.path, gathered[-1]):
        return handed_out
    frames, _ = _raw_frames(gathered, handed_out, plan.chunk_rows, whole=True)
    yield from frames
    return None


def _ends_in_open_quote(path: Path, last: pa.RecordBatch) -> bool:
    """Whether the file may end inside a quoted cell, which arrow reads as a cell running to
    the end of the file: the file then ends with a quote and the last cell, escaped."""
    if not len(last):
        return False
    cell = last.column(last.num_columns - 1)[-1].as_py()
    tail = ('"' + cell.replace('"', '""')).encode("utf-8")
    with open(path, "rb") as file:
        file.seek(max(0, file.seek(0, io.SEEK_END) - len(tail)))
        return file.read() == tail


def _raw_frames(
    batches: list[pa.RecordBatch], first: int, size: int, *, whole: bool = False
) -> tuple[list[pd.DataFrame], list[pa.RecordBatch]]:
    """Frames of `size` records cut from `batches`, numbered from `first`, and the batches
    left over (fewer than `size` records; none if `whole`: the last frame is shorter)."""
    if not batches:
        return [], []
    table = pa.Table.from_batches(batches)
    frames = []
    start = 0
    while len(table) - start >= size or (whole and start < len(table)):
        part = table.slice(start, size).combine_chunks()
        frame = part.to_pandas(types_mapper=pd.ArrowDtype)
        frame.columns = range(part.num_columns)
        frame.index = pd.RangeIndex(first + start, first + start + len(part))
        frames.append(frame)
        start += len(part)
    return frames, table.slice(start).to_batches()


def _pandas_records(plan: _DelimitedPlan, start: int) -> Iterator[pd.DataFrame]:
    """The records from number `start` on, read by pandas' chunked C parser."""
    source = str(plan.path)
    try:
        file = CheckedFile(plan.path, plan.encoding)
    except OSError as error:
        raise InputError(f"{source}: cannot be read: {error.strerror or error}") from None
    with file:
        try:
            reader = _csv_reader(file, plan)
        except _DELIMITED_FAULTS as error:
            raise _delimited_error(error, plan, file.offset) from None
        with reader:
            while True:
                try:
                    raw = next(reader, None)
                except _DELIMITED_FAULTS as error:
                    raise _delimited_error(error, plan, file.offset) from None
                if raw is None:
                    return
                yield raw.loc[start:] if start else raw


def _mark_cut_off(chunk: pd.DataFrame, plan: _DelimitedPlan) -> pd.DataFrame:
    """The file's last chunk, its last row marked if the file ends mid-row."""
    if plan.cut_after is None:
        return chunk
    row = chunk.index[-1]
    said = f"the file ends in this row, after {plan.cut_after} of {len(plan.columns)} fields, "
    said += "without a line break: was it cut off?"
    chunk.at[row, READ_ERROR_COLUMN] = "; ".join(
        part for part in (chunk.at[row, READ_ERROR_COLUMN], said) if part
    )
    return chunk


_DELIMITED_FAULTS = (pd.errors.ParserError, UnicodeDecodeError, BadBytes)


def _csv_reader(file: CheckedFile, plan: _DelimitedPlan) -> pd.io.parsers.TextFileReader:
    """pandas' chunked C parser over the records below the header, every field as text."""
    return pd.read_csv(
        file,
        engine="c",
        sep=plan.delimiter,
        quotechar='"',
        header=None,
        names=range(plan.width),
        index_col=False,
        skiprows=plan.header_row,
        skip_blank_lines=False,
        dtype=object,
        na_filter=False,
        # The C parser decodes UTF-8 itself (fast); other encodings go through Python.
        encoding="utf-8" if plan.encoding in ("utf-8", "utf-8-sig") else plan.encoding,
        chunksize=plan.chunk_rows,
    )


def _delimited_chunk(raw: pd.DataFrame, plan: _DelimitedPlan) -> pd.DataFrame:
    """A parsed chunk (integer columns, record positions) made into the promised shape."""
    n = len(plan.columns)
    errors = _extra_field_errors([raw[i].to_numpy() for i in raw.columns[n:]], n, len(raw))
    frame = raw.iloc[:, :n]
    frame.columns = plan.columns
    # skiprows counts blank lines and the rows above the header, so positions are exact.
    frame.index = raw.index + (plan.header_row + 1)
    # concat, not insert: insert warns (PerformanceWarning) on a frame of thousands of columns.
    errors_column = pd.Series(errors, index=frame.index, dtype=object, name=READ_ERROR_COLUMN)
    frame = pd.concat([frame, errors_column], axis=1)
    blank = _blank_rows(raw)
    if blank.size:
        frame = frame.drop(index=frame.index[blank])
    return frame


def _extra_field_errors(extra: list[np.ndarray], n: int, rows: int) -> np.ndarray:
    """Per row: "" or the problem of values in the fields after the header's `n`."""
    errors = np.full(rows, "", dtype=object)
    filled = [field != "" for field in extra]
    broken = np.flatnonzero(np.logical_or.reduce(filled)) if filled else np.array([], int)
    if broken.size:
        found = np.stack([field[broken] for field in filled], axis=1)
        last = found.shape[1] - np.argmax(found[:, ::-1], axis=1)  # 1 + the last filled
        errors[broken] = [f"row has {n + k} fields, the header has {n}" for k in last]
    return errors


def _blank_rows(raw: pd.DataFrame) -> np.ndarray:
    """Positions of rows with every field empty (blank lines); checked first column first."""
    maybe = np.flatnonzero((raw.iloc[:, 0] == "").to_numpy(dtype=bool))
    if not maybe.size:
        return maybe
    return maybe[(raw.iloc[maybe].to_numpy(dtype=object) == "").all(axis=1)]


_EXPECTED_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_EOF_IN_QUOTES = re.compile(r"EOF inside string starting at row (\d+)")


def _delimited_error(error: Exception, plan: _DelimitedPlan, offset: int) -> InputError:
    source = str(plan.path)
    if isinstance(error, BadBytes):
        line = line_at(plan.path, error.offset)
        if error.byte == 0:
            return InputError(f"{source}: line {line} holds a NUL byte: it is not a text file")
        return InputError(
            f"{source}: line {line} is not valid {plan.encoding} (byte 0x{error.byte:02X} at "
            f"offset {error.offset}), unlike the start of the file: name the file's encoding "
            "(source.encoding)"
        )
    if isinstance(error, UnicodeDecodeError):
        return InputError(
            f"{source}: near line {line_at(plan.path, offset)}, bytes are not valid "
            f"{plan.encoding} ({error.reason}): name the file's encoding (source.encoding)"
        )
    message = str(error)
    if found := _EXPECTED_FIELDS.search(message):
        row, fields = found.group(2), found.group(3)
        return InputError(
            f"{source}: row {row} has {fields} fields, the header has {len(plan.columns)}: "
            f"too many to read (is the delimiter {plan.delimiter!r} right?)"
        )
    if found := _EOF_IN_QUOTES.search(message):
        row = int(found.group(1)) + 1  # the parser counts records from 0
        return InputError(f"{source}: row {row} opens a quoted cell that is never closed")
    detail = message.removeprefix("Error tokenizing data. C error: ").strip()
    return InputError(f"{source}: cannot be read as delimited text: {detail}")


# -- workbooks ---------------------------------------------------------------------------------


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


def _open_workbook(path: Path, options: SourceOptions) -> SourceTable:
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
    columns = _header_names(cells, first_column=sheet.first_column, row=header_row, source=where)
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
    start, at_eof = _read_start(path, 1 << 16)
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
) -> tuple[list[int], list[list[str]], list[str]]:
    """The next `limit` non-empty rows as text: row numbers, `n` cells each, problems."""
    numbers: list[int] = []
    records: list[list[str]] = []
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


__all__ = [
    "READ_ERROR_COLUMN",
    "TEXT_SUFFIXES",
    "WORKBOOK_SUFFIXES",
    "SourceOptions",
    "SourceTable",
    "open_table",
]

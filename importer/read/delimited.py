"""Delimited text (`.csv`, `.tsv`, `.txt`): the sample read when the table is opened, and
the records read in chunks after.

Delimited text streams: memory does not grow with the file's length. A UTF-8 file is read
by arrow's streaming reader (`importer.read.arrow`, several times as fast) for as long as
every record has the header's fields; from the first that does not (a ragged row, a bad
byte, a quote never closed), and for other encodings, pandas' C parser reads, and it alone
says what is wrong: both give exactly the same chunks. The encoding and the delimiter are
detected unless named (see `importer.encodings` and `_sniff_delimiter`).

A row with more values than the header has columns keeps its first values and says so
("row has 9 fields, the header has 7"); extra fields that are empty (a trailing delimiter)
are ignored. A row with fewer fields is sound: the missing cells are "". Except the last
row of a file that ends without a line break: with fewer fields than the header it is the
mark of a file cut off mid-row, and the row says so ("the file ends in this row, after 4
of 5 fields, without a line break: was it cut off?").

Faults the reader only meets mid-file are an InputError raised from `chunks()` naming the
row or line: a quote that is never closed, a row with so many fields it cannot be a row of
this table (more than any record in the first MiB has, and more than the header's count
plus `_SPARE_FIELDS`), bytes that do not decode, a NUL byte. A record of the first MiB far
wider than the header (a line of a million commas) is read apart (`importer.read.wide_rows`)
so that it does not make every row as wide: it is one row, marked as above. A
whitespace-only line is not blank: its cells are kept as they are.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from importer.encodings import (
    BadBytes,
    CheckedFile,
    choose_encoding,
    decode_sample,
    is_ascii_compatible,
    line_at,
)
from importer.errors import InputError
from importer.read import arrow, wide_rows
from importer.read.table import (
    READ_ERROR_COLUMN,
    SourceOptions,
    SourceTable,
    header_names,
    read_start,
)

_DELIMITERS = (",", ";", "\t", "|")  # sniffed in this order of preference
_DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t"}
_SNIFF_RECORDS = 5  # records after the header that a delimiter's field count must agree with
_SAMPLE_START = 1 << 20  # bytes read to detect the encoding and find the header
_SAMPLE_MAX = 1 << 24
_SPARE_FIELDS = 4  # extra fields a CSV row may have (beyond any row of the sample) and be kept


@dataclass(frozen=True)
class DelimitedPlan:
    """Everything `_delimited_chunks` needs, settled when the table is opened."""

    path: Path
    encoding: str
    delimiter: str
    columns: list[str]
    width: int  # fields parsed per record: the header's names plus spare ones
    header_row: int
    chunk_rows: int
    cut_after: int | None = None  # the file ends mid-row, after this many fields
    # Fields of every record when arrow's reader may read the file (see `arrow.read_records`),
    # else None.
    arrow_fields: int | None = None
    apart: wide_rows.Apart = field(default_factory=wide_rows.Apart)  # records too wide for pandas


def open_delimited(path: Path, options: SourceOptions) -> SourceTable:
    source = str(path)
    delimiter = _named_delimiter(options.delimiter, source)
    header_row = options.header_row
    size = _SAMPLE_START
    while True:
        sample, at_eof = read_start(path, size)
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
    columns = header_names(header, first_column=0, row=header_row, source=source)
    widest, apart = wide_rows.read_apart(
        _sample_records(text, chosen, at_eof=at_eof),
        header_row=header_row,
        columns=len(columns),
        most=wide_rows.most_fields(len(header)),
    )
    plan = DelimitedPlan(
        path=path,
        encoding=encoding,
        delimiter=chosen,
        columns=columns,
        # Room for every record of the sample but those read apart: the parser's first
        # record must fit (pandas would take extra fields there for an index), and ragged
        # files get spare room.
        width=max(len(columns) + _SPARE_FIELDS, widest),
        header_row=header_row,
        chunk_rows=options.chunk_rows,
        cut_after=_cut_after(path, encoding, chosen, len(columns)),
        apart=apart,
    )
    if arrow.may_read(plan, text):
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


def _sample_records(text: str, delimiter: str, *, at_eof: bool) -> Iterator[list[str]]:
    """The records that certainly end within `text`, one at a time."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"')
    held = None
    try:
        for record in reader:
            if held is not None:
                yield held
            held = record
    except csv.Error:  # a field too long for the csv module: the records before it are whole
        return
    if at_eof and held is not None:  # else the last record may run on past the sample
        yield held


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


def _delimited_chunks(plan: DelimitedPlan) -> Iterator[pd.DataFrame]:
    held = None  # one chunk is held back: the last one's last row may be cut off
    raws = _raw_records(plan)
    if plan.apart.skipped:
        raws = wide_rows.put_back(
            raws, plan.apart.rows, width=plan.width, chunk_rows=plan.chunk_rows
        )
    for raw in raws:
        chunk = _delimited_chunk(raw, plan)
        if len(chunk):
            if held is not None:
                yield held
            held = chunk
    if held is not None:
        yield _mark_cut_off(held, plan)


def _raw_records(plan: DelimitedPlan) -> Iterator[pd.DataFrame]:
    """Raw chunks (fields numbered from 0, records numbered from 0 below the header): from
    arrow's reader while the file is regular, from pandas' from the first irregular record."""
    start = 0
    if plan.arrow_fields is not None:
        stopped_at = yield from arrow.read_records(plan, plan.arrow_fields)
        if stopped_at is None:
            return
        start = stopped_at
    yield from _pandas_records(plan, start)


def _pandas_records(plan: DelimitedPlan, start: int) -> Iterator[pd.DataFrame]:
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
                if plan.apart.skipped:
                    raw.index = wide_rows.renumber(raw.index, plan.apart.skipped)
                yield raw.loc[start:] if start else raw


def _mark_cut_off(chunk: pd.DataFrame, plan: DelimitedPlan) -> pd.DataFrame:
    """The file's last chunk, its last row marked if the file ends mid-row."""
    if plan.cut_after is None:
        return chunk
    row = chunk.index[-1]
    said = f"the file ends in this row, after {plan.cut_after} of {len(plan.columns)} fields, "
    said += "without a line break: was it cut off?"
    chunk.at[row, READ_ERROR_COLUMN] = "; ".join(
        str(part) for part in (chunk.at[row, READ_ERROR_COLUMN], said) if part
    )
    return chunk


_DELIMITED_FAULTS = (pd.errors.ParserError, UnicodeDecodeError, BadBytes)


def _csv_reader(file: CheckedFile, plan: DelimitedPlan) -> pd.io.parsers.TextFileReader:
    """pandas' chunked C parser over the records below the header, every field as text."""
    return pd.read_csv(
        file,
        engine="c",
        sep=plan.delimiter,
        quotechar='"',
        header=None,
        names=range(plan.width),
        index_col=False,
        skiprows=_skipped_rows(plan),
        skip_blank_lines=False,
        dtype=object,
        na_filter=False,
        # The C parser decodes UTF-8 itself (fast); other encodings go through Python.
        encoding="utf-8" if plan.encoding in ("utf-8", "utf-8-sig") else plan.encoding,
        chunksize=plan.chunk_rows,
    )


def _skipped_rows(plan: DelimitedPlan) -> int | list[int]:
    """What pandas skips: the rows down to the header, and the records read apart."""
    if not plan.apart.skipped:
        return plan.header_row
    return [*range(plan.header_row), *(plan.header_row + r for r in plan.apart.skipped)]


def _delimited_chunk(raw: pd.DataFrame, plan: DelimitedPlan) -> pd.DataFrame:
    """A parsed chunk (integer columns, record positions) made into the promised shape."""
    n = len(plan.columns)
    errors = _extra_field_errors([raw[i].to_numpy() for i in raw.columns[n:]], n, len(raw))
    if plan.apart.rows:
        wide_rows.mark(errors, raw.index, plan.apart.rows)
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


def _delimited_error(error: Exception, plan: DelimitedPlan, offset: int) -> InputError:
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

"""arrow's streaming CSV reader, for delimited text while it is regular.

It reads UTF-8 several times as fast as pandas' C parser, and gives exactly the chunks
pandas would, for as long as every record has the header's fields and the bytes are sound.
At the first record that is not so, `read_records` stops and says how many records it handed
out; pandas' reader (`importer.read.delimited`) goes on from there and says what is wrong.
"""

from __future__ import annotations

import codecs
import io
import itertools
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from importer.encodings import BadBytes, CheckedFile

if TYPE_CHECKING:
    from importer.read.delimited import DelimitedPlan


def may_read(plan: DelimitedPlan, sample: str) -> bool:
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


def read_records(plan: DelimitedPlan, fields: int) -> Generator[pd.DataFrame, None, int | None]:
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

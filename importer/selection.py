"""Which of the input's data rows a run takes: `--limit N`, `--rows 100-250`, `retry`'s rows.

A `RowSelection` names rows by their spreadsheet row number (the read stage's index) in
inclusive ranges, and may cap how many rows are taken (`limit`: the first N of the rows the
ranges take, in file order). `RowSelection()` takes every row. Rows it does not take are not
part of the run at all: they are not mapped, sent or reported.

`selection.take(chunks)` applies it to the read stage's chunks a chunk at a time with numpy
(no Python loop over rows) and stops pulling chunks, and closes the reader, as soon as no
later row can be taken: once `limit` rows are taken, or past the last row of the ranges. So
`--limit 10` on a million-row file reads one chunk; `chunk_rows(n)` shrinks that chunk to what
the selection can take at most.

    RowSelection(ranges=parse_rows("5,9,20-30"))   # rows 5, 9 and 20 to 30
    RowSelection(limit=100)                         # the first 100 data rows
    RowSelection.of([12, 13, 14, 40])               # retry's rows, as ranges (12-14, 40)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

Range = tuple[int, int]  # first and last spreadsheet row, both included


@dataclass(frozen=True, kw_only=True)
class RowSelection:
    """Rows to take: those in `ranges` (None: every row), at most `limit` of them (None: no
    cap). Ranges are kept sorted and merged, whatever order they were given in."""

    ranges: tuple[Range, ...] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"a row limit must be 1 or more, not {self.limit}")
        if self.ranges is not None:
            for first, last in self.ranges:
                if first < 1 or last < first:
                    raise ValueError(f"{first}-{last} is not a range of row numbers")
            object.__setattr__(self, "ranges", _merged(self.ranges))

    @classmethod
    def of(cls, rows: Iterable[int]) -> RowSelection:
        """Exactly these row numbers (kept as ranges of consecutive numbers)."""
        numbers = np.unique(np.fromiter(rows, dtype=np.int64))
        if len(numbers) == 0:
            return cls(ranges=())
        breaks = np.flatnonzero(np.diff(numbers) != 1)
        starts = numbers[np.concatenate(([0], breaks + 1))]
        ends = numbers[np.concatenate((breaks, [len(numbers) - 1]))]
        return cls(ranges=tuple(zip(starts.tolist(), ends.tolist(), strict=True)))

    @property
    def everything(self) -> bool:
        """Whether every row is taken."""
        return self.ranges is None and self.limit is None

    @property
    def last_row(self) -> int | None:
        """The last row the ranges can take (None: no such bound)."""
        if self.ranges is None:
            return None
        return self.ranges[-1][1] if self.ranges else 0

    def at_most(self, rows: int | None) -> int | None:
        """How many rows the selection takes of a table of `rows` data rows (None: not
        known, and no bound from the selection either)."""
        bounds = [bound for bound in (rows, self.limit) if bound is not None]
        if self.ranges is not None:
            bounds.append(sum(last - first + 1 for first, last in self.ranges))
        return min(bounds) if bounds else None

    def chunk_rows(self, chunk_rows: int, header_row: int) -> int:
        """`chunk_rows`, or fewer when the selection can never take that many: no chunk needs
        more records than `limit`, nor than there are rows from the header to `last_row`."""
        bounds = [chunk_rows]
        if self.limit is not None:
            bounds.append(self.limit)
        if self.last_row is not None:
            bounds.append(self.last_row - header_row)
        return max(1, min(bounds))

    def take(self, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """The selected rows of `chunks`, chunk by chunk (no chunk empty); stops reading,
        and closes `chunks` (when it can be closed), once no later row can be taken."""
        try:
            taken = 0
            for chunk in chunks:
                last_seen = int(chunk.index[-1]) if len(chunk) else 0
                chunk = self._taken_of(chunk, taken)
                taken += len(chunk)
                if len(chunk):
                    yield chunk
                if self._done(taken, last_seen):
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _taken_of(self, chunk: pd.DataFrame, taken: int) -> pd.DataFrame:
        if self.ranges is not None:
            chunk = chunk[self._in_ranges(chunk.index.to_numpy(dtype=np.int64))]
        if self.limit is not None and len(chunk) > self.limit - taken:
            chunk = chunk.iloc[: self.limit - taken]
        return chunk

    def _in_ranges(self, rows: np.ndarray) -> np.ndarray:
        """A mask of the rows inside a range: each row against the last range starting at or
        before it (ranges are sorted and do not overlap)."""
        starts, ends = self._bounds
        if not len(starts):
            return np.zeros(len(rows), dtype=bool)
        which = np.searchsorted(starts, rows, side="right") - 1
        return (which >= 0) & (rows <= ends[np.maximum(which, 0)])

    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The ranges' first and last rows as arrays (made once: retry's may be many)."""
        bounds = np.array(self.ranges or (), dtype=np.int64).reshape(-1, 2)
        return bounds[:, 0], bounds[:, 1]

    def _done(self, taken: int, last_seen: int) -> bool:
        if self.limit is not None and taken >= self.limit:
            return True
        last = self.last_row
        return last is not None and last_seen >= last


EVERY_ROW = RowSelection()


def parse_rows(text: str) -> tuple[Range, ...]:
    """Rows written as a person writes them: `7`, `100-250`, `5,9,20-30` (spaces allowed).
    ValueError, saying which part is wrong, for anything else."""
    ranges = []
    for part in text.split(","):
        first, dash, last = (piece.strip() for piece in part.partition("-"))
        if not first.isdecimal() or (dash and not last.isdecimal()):
            raise ValueError(f"{part.strip()!r} is not a row number or a range like 100-250")
        start, end = int(first), int(last) if dash else int(first)
        if start < 1 or end < start:
            raise ValueError(f"{part.strip()!r} is not a range of row numbers from 1 up")
        ranges.append((start, end))
    return tuple(ranges)


def _merged(ranges: Iterable[Range]) -> tuple[Range, ...]:
    merged: list[Range] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)

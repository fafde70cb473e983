"""The report stage: the results CSV, the run summary and the exit code.

`ResultsWriter` writes one line per input row, in input order, as rows are decided, and
flushes every block so that a crash leaves everything decided so far on disk. Cells that a
spreadsheet would run as a formula are neutralised (OWASP's rule: a leading `=`, `+`, `-`,
`@`, tab or carriage return gets a `'` in front); what is sent to the API is unchanged.

`Summary` counts outcomes by status and keeps the most common reasons, grouped by kind
(`importer.reasons`) with the first row of each as an example; `exit_code()` turns
it into the number cron sees: 0 all rows created, valid or skipped; 1 some rows invalid or
failed. (2 — the run could not start — and 130 — interrupted — are decided by the CLI.)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

from importer.payload import FIELD_NAMES
from importer.private_files import create_private_file
from importer.reasons import example, kind_of
from importer.records import Cells, Outcome, OutcomeBlock, Status, contact_as_written

RESULT_COLUMNS: tuple[str, ...] = (
    "row",
    "key",
    "contact",
    "contact_id",
    "found_by",
    "status",
    "http_status",
    "activity_id",
    "attempts",
    "error",
    "warning",
    *FIELD_NAMES,
)

# OWASP's list of what starts a spreadsheet formula
_FORMULA_START = pa.array(["=", "+", "-", "@", "\t", "\r"])
_NUMBER_COLUMNS = frozenset({"row", "contact_id", "http_status", "attempts"})
_SCHEMA = pa.schema(
    [(name, pa.int64() if name in _NUMBER_COLUMNS else pa.string()) for name in RESULT_COLUMNS]
)
_FLUSH_EVERY = 500


class ResultsWriter:
    """Writes outcomes, in the order given, to a results CSV. Use as a context manager.

    Lines are written in blocks through pyarrow's CSV writer (four times as fast as the
    `csv` module); `write` holds up to `_FLUSH_EVERY` outcomes before writing them. Text
    cells are quoted; blank cells and numbers are not.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self._file = create_private_file(self.path, overwrite=overwrite, binary=True)
        self._file.write((",".join(RESULT_COLUMNS) + "\n").encode())  # plain names, unquoted
        self._csv = pa_csv.CSVWriter(
            self._file,
            _SCHEMA,
            write_options=pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
        )
        self._held: list[Outcome] = []
        self.rows_written = 0

    def write(self, outcomes: Iterable[Outcome]) -> None:
        self._held.extend(outcomes)
        if len(self._held) >= _FLUSH_EVERY:
            self.flush()

    def write_block(self, block: OutcomeBlock) -> None:
        self._write_held()
        self._csv.write_table(_table(block))
        self.rows_written += len(block)
        self._file.flush()

    def flush(self) -> None:
        self._write_held()
        self._file.flush()

    def _write_held(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._csv.write_table(_table(OutcomeBlock.of(held)))
            self.rows_written += len(held)

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._csv.close()
            self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _table(block: OutcomeBlock) -> pa.Table:
    n = len(block)
    blank = [""] * n
    text = {
        "key": block.keys if block.keys is not None else blank,
        "contact": contact_as_written(block.contacts),
        "activity_id": block.activity_ids or blank,
        "error": block.errors,
        "warning": _joined(block.warnings, n),
        **{name: block.values.get(name, blank) for name in FIELD_NAMES},
    }
    ours = {"status": _status_cells(block.statuses), "found_by": block.found_by}  # not the user's
    numbers = {
        "row": block.rows,
        "contact_id": block.contact_ids,
        "http_status": block.http_statuses or [None] * n,
        "attempts": block.attempts or [0] * n,
    }
    columns = []
    for name in RESULT_COLUMNS:
        if name in numbers:
            columns.append(_arrow(numbers[name], pa.int64()))
        elif name in ours:
            columns.append(_blank_as_empty(_arrow(ours[name], pa.string())))
        else:
            columns.append(_text_cells(_arrow(text[name], pa.string())))
    return pa.Table.from_arrays(columns, schema=_SCHEMA)


_STATUSES = list(Status)
_STATUS_TEXT = pa.array([status.value for status in _STATUSES], pa.string())
_STATUS_CODE = {status: code for code, status in enumerate(_STATUSES)}


def _status_cells(statuses: list[Status]) -> pa.Array:
    """The statuses as text: by code, since converting a million enum members one by one
    takes ten times as long."""
    codes = np.fromiter(map(_STATUS_CODE.__getitem__, statuses), np.int8, len(statuses))
    return _STATUS_TEXT.take(pa.array(codes))


def _arrow(cells: Cells, kind: pa.DataType) -> pa.Array:
    return cells if isinstance(cells, pa.Array) else pa.array(cells, kind)


def _text_cells(cells: pa.Array) -> pa.Array:
    """Text cells as written: formulas neutralised, blanks as empty (unquoted) cells."""
    formula = pc.is_in(pc.utf8_slice_codeunits(cells, 0, 1), value_set=_FORMULA_START)
    if pc.any(formula).as_py():
        cells = pc.if_else(formula, pc.binary_join_element_wise("'", cells, ""), cells)
    return _blank_as_empty(cells)


def _blank_as_empty(cells: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(cells, ""), pa.scalar(None, pa.string()), cells)


def _joined(warnings: dict[int, list[str]], n: int) -> list[str]:
    cells = [""] * n
    for pos, items in warnings.items():
        cells[pos] = "; ".join(items)
    return cells


# The statuses every summary counts, even at 0; the others (a sync's, a dry run's with a
# ledger) appear when some row has them.
ALWAYS_COUNTED = (Status.CREATED, Status.VALID, Status.INVALID, Status.SKIPPED, Status.FAILED)


@dataclass
class Summary:
    """Counts and timings of one run; what the CLI prints and `--summary-json` writes."""

    dry_run: bool
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # kind of reason -> rows
    examples: dict[str, str] = field(default_factory=dict)  # kind -> its first row, shown
    started: float = field(default_factory=time.time)
    finished: float | None = None
    interrupted: bool = False
    results_path: str = ""
    error: str = ""  # what stopped the run, if anything did (exit code 2)
    in_doubt: int = 0  # failed rows whose activity may exist: the next run looks for them

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self._count(outcome.status, outcome.error, outcome.row)
            self.in_doubt += outcome.in_doubt

    def add_block(self, block: OutcomeBlock) -> None:
        for status, rows in Counter(block.statuses).items():
            self.counts[status.value] += rows
        for pos in np.flatnonzero(np.asarray(block.errors, dtype=object) != ""):
            if block.statuses[pos] in (Status.INVALID, Status.FAILED):
                self._count_reasons(block.errors[pos], block.rows[pos])

    def _count(self, status: Status, error: str, row: int) -> None:
        self.counts[status.value] += 1
        if error and status in (Status.INVALID, Status.FAILED):
            self._count_reasons(error, row)

    def _count_reasons(self, error: str, row: int | None) -> None:
        for reason in error.split("; "):
            kind, value = kind_of(reason)
            self.reasons[kind] += 1
            self.examples.setdefault(kind, example(value, row))

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def exit_code(self) -> int:
        if self.error:
            return 2
        if self.interrupted:
            return 130
        return 1 if self.counts[Status.INVALID] or self.counts[Status.FAILED] else 0

    def finish(self) -> None:
        self.finished = time.time()

    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rows": self.rows,
            "counts": {
                s.value: self.counts[s.value]
                for s in Status
                if s in ALWAYS_COUNTED or self.counts[s.value]
            },
            "in_doubt": self.in_doubt,
            "top_reasons": [
                {"reason": r, "rows": n, "example": self.examples.get(r, "")}
                for r, n in self.reasons.most_common(5)
            ],
            "started_at": _iso(self.started),
            "finished_at": _iso(self.finished) if self.finished else None,
            "seconds": round(self.seconds(), 3),
            "interrupted": self.interrupted,
            "error": self.error,
            "exit_code": self.exit_code(),
            "results": self.results_path,
        }

    def text(self) -> str:
        """A few lines for a person at a terminal."""
        parts = [f"{self.counts[s.value]:,} {s.value}" for s in Status if self.counts[s.value]]
        rate = self.rows / self.seconds() if self.seconds() > 0 else 0.0
        lines = [
            f"{self.rows:,} rows in {self.seconds():.1f}s ({rate:,.0f} rows/s): "
            + (", ".join(parts) or "nothing to do"),
        ]
        if self.in_doubt:
            lines.append(
                f"{self.in_doubt:,} in doubt (counted in failed): they may exist in Givebutter;"
                " run again to look for them, or settle them by hand (see the README)"
            )
        if self.reasons:
            lines.append("most common reasons:")
            lines += [
                f"  {n:>7,} × {reason} (e.g. {self.examples[reason]})"
                for reason, n in self.reasons.most_common(5)
            ]
        if self.results_path:
            lines.append(f"results: {self.results_path}")
        if self.interrupted:
            lines.append("interrupted: rows not reached are in the results as failed")
        return "\n".join(lines)


class Reporter:
    """The report stage's door: writes decided outcomes, counts them in the summary and
    tells the progress callback how many rows were decided."""

    def __init__(
        self, writer: ResultsWriter, summary: Summary, on_progress: Callable[[int], None] | None
    ) -> None:
        self.writer = writer
        self.summary = summary
        self.on_progress = on_progress

    def __call__(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        self.writer.write(outcomes)
        self.summary.add(outcomes)
        if self.on_progress is not None:
            self.on_progress(len(outcomes))

    def block(self, block: OutcomeBlock) -> None:
        self.writer.write_block(block)
        self.summary.add_block(block)
        if self.on_progress is not None:
            self.on_progress(len(block))


def write_summary_json(summary: Summary, path: str | Path, *, overwrite: bool = True) -> None:
    with create_private_file(Path(path), overwrite=overwrite) as out:
        json.dump(summary.as_dict(), out, indent=2)
        out.write("\n")


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))

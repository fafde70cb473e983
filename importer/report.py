"""The report stage: the results CSV, the run summary and the exit code.

`ResultsWriter` writes one line per input row, in input order, as rows are decided, and
flushes every block so that a crash leaves everything decided so far on disk. Cells that a
spreadsheet would run as a formula are neutralised (OWASP's rule: a leading `=`, `+`, `-`,
`@`, tab or carriage return gets a `'` in front); what is sent to the API is unchanged.

`Summary` counts outcomes by status and keeps the most common reasons; `exit_code()` turns
it into the number cron sees: 0 all rows created, valid or skipped; 1 some rows invalid or
failed. (2 — the run could not start — and 130 — interrupted — are decided by the CLI.)
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.errors import ConfigError
from importer.payload import FIELD_NAMES
from importer.records import Outcome, Status

RESULT_COLUMNS: tuple[str, ...] = (
    "row",
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

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FLUSH_EVERY = 500


def neutralise(cell: str) -> str:
    """Make a cell safe to open in a spreadsheet (no formula runs)."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def create_private_file(path: Path, *, overwrite: bool) -> io.TextIOWrapper:
    """Open a new text file readable by its owner only; refuse to replace one unless told."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists (use --force to replace it)") from None
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    os.fchmod(fd, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")


class ResultsWriter:
    """Writes outcomes, in the order given, to a results CSV. Use as a context manager."""

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self._file = create_private_file(self.path, overwrite=overwrite)
        self._csv = csv.writer(self._file)
        self._csv.writerow(RESULT_COLUMNS)
        self._unflushed = 0
        self.rows_written = 0

    def write(self, outcomes: Iterable[Outcome]) -> None:
        lines = [_line(o) for o in outcomes]
        self._csv.writerows(lines)
        self.rows_written += len(lines)
        self._unflushed += len(lines)
        if self._unflushed >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._unflushed = 0

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _line(outcome: Outcome) -> list[str]:
    body = outcome.payload.to_body() if outcome.payload is not None else {}
    cells = [
        str(outcome.row),
        outcome.contact,
        "" if outcome.contact_id is None else str(outcome.contact_id),
        outcome.found_by,
        outcome.status.value,
        "" if outcome.http_status is None else str(outcome.http_status),
        outcome.activity_id or "",
        str(outcome.attempts),
        outcome.error,
        "; ".join(outcome.warnings),
        *("" if body.get(name) is None else str(body[name]) for name in FIELD_NAMES),
    ]
    return [neutralise(cell) for cell in cells]


@dataclass
class Summary:
    """Counts and timings of one run; what the CLI prints and `--summary-json` writes."""

    dry_run: bool
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    interrupted: bool = False
    results_path: str = ""

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self.counts[outcome.status.value] += 1
            if outcome.status in (Status.INVALID, Status.FAILED) and outcome.error:
                for reason in outcome.error.split("; "):
                    self.reasons[_reason_kind(reason)] += 1

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def exit_code(self) -> int:
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
            "counts": {s.value: self.counts[s.value] for s in Status},
            "top_reasons": [{"reason": r, "rows": n} for r, n in self.reasons.most_common(5)],
            "started_at": _iso(self.started),
            "finished_at": _iso(self.finished) if self.finished else None,
            "seconds": round(self.seconds(), 3),
            "interrupted": self.interrupted,
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
        if self.reasons:
            lines.append("most common reasons:")
            lines += [f"  {n:>7,} × {reason}" for reason, n in self.reasons.most_common(5)]
        if self.results_path:
            lines.append(f"results: {self.results_path}")
        if self.interrupted:
            lines.append("interrupted: rows not reached are in the results as failed")
        return "\n".join(lines)


def write_summary_json(summary: Summary, path: str | Path, *, overwrite: bool = True) -> None:
    with create_private_file(Path(path), overwrite=overwrite) as out:
        json.dump(summary.as_dict(), out, indent=2)
        out.write("\n")


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only by the quoted value: "occurred_at ('x') does not..."."""
    start, end = reason.find("('"), reason.find("')")
    if 0 <= start < end:
        return reason[:start] + reason[end + 2 :].lstrip()
    return reason


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))

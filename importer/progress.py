"""Progress on the command line's stderr: a bar on a terminal, a line now and then elsewhere.

The library reports progress through callbacks (`RunOptions.on_start`, `on_progress`,
`on_notice`); this is the CLI's answer to them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from importer.read import SourceTable


def say(line: str) -> None:
    """One line on stderr, at once."""
    print(line, file=sys.stderr, flush=True)


PROGRESS_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal


class Progress:
    """Progress on stderr: on a terminal, a tqdm bar for runs that take a while; elsewhere
    (a log, cron mail, a pipe) a line every `interval` seconds with the rows done, the rate
    and the time left, so that a long run is never silent."""

    def __init__(
        self,
        *,
        enabled: bool,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        on_terminal = sys.stderr.isatty()
        self.enabled = enabled and on_terminal
        self.lines = enabled and not on_terminal
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.clock = clock
        self.bar: tqdm | None = None
        self.total: int | None = None
        self.done = 0
        self.started = self.next_line = 0.0

    def start(self, table: SourceTable, total: int | None = None) -> None:
        """A run of `table` begins: `total` rows (default the table's estimate of its own)."""
        self.total, self.done = table.rows_hint if total is None else total, 0
        self.started = self.clock()
        self.next_line = self.started + self.interval
        if self.enabled:
            self.bar = tqdm(
                total=self.total,
                unit="row",
                delay=2.0,
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.05,
            )

    def advance(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)
        self.done += rows
        if self.lines and (now := self.clock()) >= self.next_line:
            self.next_line = now + self.interval
            say(self.line(now - self.started))

    def line(self, seconds: float) -> str:
        """`progress: 12,000 of about 100,000 rows in 30 s (400 rows/s), about 3 min 15 s left`."""
        rate = self.done / seconds if seconds > 0 else 0.0
        of = f" of about {self.total:,}" if self.total else ""
        said = f"progress: {self.done:,}{of} rows in {_duration(seconds)} ({rate:,.0f} rows/s)"
        if self.total and rate > 0 and self.done < self.total:
            said += f", about {_duration((self.total - self.done) / rate)} left"
        return said

    def notice(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            say(line)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
